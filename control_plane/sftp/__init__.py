"""SFTP for tenants: accounts' SSH public keys (`keys`, `models`, `service`) and the SFTP
server inside `pocketfleet serve` (`server`), which opens an instance's code folders through
`control_plane.files.tree.InstanceFiles`."""
