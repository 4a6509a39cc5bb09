"""Boot a core with a unit on its virtual twin under QEMU (`oemkit boot`)."""
