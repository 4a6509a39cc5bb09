"""The appliance: the signed UKI, the disk image, its A/B banks (docs/appliance.md)."""
