"""Burn-in (`oemkit burnin`): every built unit of an order booted on its twin, N at a time over one or more libvirt
hosts, with a console log per unit, a JSON report and JUnit XML (docs/burnin.md).

  run       the units found in OUT, the checks before any twin starts (`prepare`, `check_hosts`), the worker pool
            and the URI each unit goes to, interruption (`burn_in`), the real per-unit boot through oemkit.twin.virt
  report    the results as data, the JSON report and JUnit XML
"""
