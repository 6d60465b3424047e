"""Backups off the machine: continuous replication (Litestream), scheduled snapshots, verified
and point-in-time restores.

    store.py          the BackupStore seam; s3_store.py (boto3) and local_store.py (a folder)
    archive.py        snapshot archives: consistent database copies + files + manifest
    db_copy.py        database copies taken by a child running as the instance's uid
    replication.py    the fleet's Litestream processes, one per shard (supervised, adopted)
    litestream.py     one Litestream process: jail, start, adoption, stop, control socket
    replication_checks.py  what keeps tenants' links out of replication
    pauses.py         replication paused while an instance sleeps
    schedule.py       schedules (crontab, @daily, @every 6h) and APScheduler triggers
    retention.py      which snapshots to keep
    restore.py        staging, atomic swap and crash recovery on disk
    service.py        BackupService: snapshots, schedules, retention, operators' overview
    restores.py       restores from a snapshot or to a point in time
    overview.py       the operators' view: last good, replication lag, overdue
    models.py         tables; schemas.py API shapes; jobs.py scheduler entry points
"""
