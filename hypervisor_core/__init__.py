"""The part that lives on the appliance: standard library and libvirt only (never oemkit, typer, rich, pydantic)."""

__version__ = "0.1.0"
