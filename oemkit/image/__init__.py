"""Images: the files a factory writes to a server, built from Debian packages and our own code.

Two words, one meaning each, everywhere (packages, CLI, docs):
- the **core** is the embedded hypervisor itself: one kernel and one initramfs holding libvirt, QEMU, Python, the
  agent (`hypervisor_core`) and the factory's public key. `oemkit core build` makes one (image/core/); a core
  folder (COREDIR) holds it, named by its core id. It is the same for every unit built with that factory key.
- an **image** is what gets written to a device: today only the core's boot files; the appliance disk image (GPT,
  signed UKIs, the unit's config partition) joins this package next. `hypervisor_core` is the agent's Python
  package, which the core carries; it is never called "the core" on its own.

Shared by the image builders: buildcache.py (stages cached by their inputs) and tools.py (running build tools).
"""
