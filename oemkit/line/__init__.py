"""The build line (`oemkit line`): an order's units sealed and built into signed appliance images, in parallel, with
a report per run and an audit log per serial.

  run       the checked inputs (`prepare`), the fan-out over workers, interruption (`run`)
  unit      one unit's work in a worker: the rerun decision, its unit.json, `image.build`
  report    the results as data, the JSON report and JUnit XML
  audit     OUT/<serial>/line.log, one JSON line per event
"""
