"""pocketfleet's control plane: accounts, instances, lifecycle, engines, drivers, reconcile."""
