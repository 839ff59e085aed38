"""Backups of the database: consistent snapshots, kept on local disk or in any
S3-compatible object storage, taken on a cron schedule, with retention and restore.

A backup is a snapshot of the database (store.base.Snapshots), gzipped,
optionally encrypted (archive.py), and described by a sidecar `<name>.json`
(LOCAL) or the object's metadata (OBJECT_STORAGE): schema version, task
count, SHA-256 of the archive and of the database (targets.py). Restore
verifies all of that before it replaces anything (commands.py). The schedule
takes one backup per cron tick across every server (schedule.py).
"""
