"""oemkit: the factory side of an embedded KVM hypervisor that configures itself on first power-on."""

__version__ = "0.1.0"
