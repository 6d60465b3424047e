"""An instance's code folders (`pb_hooks/`, `pb_migrations/`, `pb_public/`) as tenants reach
them through the files API, SFTP and deploys: path rules (`rules`), the walk that trusts
nothing in the folder (`tree.InstanceFiles`), refusals (`errors`), the service over accounts
and limits (`service.FileService`) and the API's shapes (`schemas`)."""
