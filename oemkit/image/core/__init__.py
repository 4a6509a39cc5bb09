"""The core: a kernel and an initramfs built only from Debian packages (`oemkit core build`).

recipe (what goes in, and why) · debian (kernel and userland stages) · selection, elf (files and their ELF
closure) · pystdlib (the measured Python set, sourceless .pyc) · kmod (module closure, depmod) · assemble (the
whole initramfs, part by part) · cpio (reproducible newc) · build (orchestration, COREDIR) · footprint (the
document, the budget, measuring a COREDIR) · files/ (the core's /init and configuration)."""
