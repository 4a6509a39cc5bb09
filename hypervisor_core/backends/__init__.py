"""Where plan steps take effect: libvirt (networks, pools, volumes, domains) and the host (files under a root)."""
