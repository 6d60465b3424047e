"""The control database: desired state of every account and instance (SQLModel)."""
