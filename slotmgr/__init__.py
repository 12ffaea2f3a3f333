"""slotmgr: run batch jobs as transient systemd units."""

__version__ = "0.1.0"
