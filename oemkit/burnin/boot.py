"""One unit burned in on libvirt (the real `boot_one` of run.burn_in), and the result records a unit gets."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path

from oemkit.burnin.job import Job, Unit
from oemkit.burnin.report import CANCELLED, ERROR, FAILED, FIRST_BOOT, INFRASTRUCTURE, READY, TIMEOUT, UnitResult
from oemkit.errors import OemkitError
from oemkit.outputs import open_stream
from oemkit.twin import appliance, session, virt
from oemkit.twin.console import BootResult

_MARK = re.compile(r"oemkit-core: (\w+) t=")  # the init's marks: the phase the live table shows
OnPhase = Callable[[Unit, str], None]  # its console showed an `oemkit-core:` mark (in its worker thread)


def cancelled(unit: Unit, reason: str, uri: str | None = None) -> UnitResult:
    return UnitResult(unit.serial, unit.model, CANCELLED, reason=reason, folder=str(unit.folder), uri=uri)


def error(unit: Unit, uri: str, reason: str, console_log: Path | None = None) -> UnitResult:
    """An infrastructure error: libvirt could not run the twin, or the unit's folder could not be read."""
    return UnitResult(unit.serial, unit.model, ERROR, INFRASTRUCTURE, reason, folder=str(unit.folder), uri=uri,
                      console_log=str(console_log) if console_log else None)  # fmt: skip


def failing_step(result: BootResult) -> str | None:
    """The first step of the plan that did not succeed. The status line lists the steps run as {"id", "seconds"}
    (with a "status" when an agent gives one); the agent stops at the first failure, and its reason is then that
    step's (apply_plan: "<id>: <detail>") or names the step it never reached ("first boot timed out before <id>")."""
    for step in result.steps:
        if isinstance(step, dict) and step.get("status", "ok") != "ok":
            return str(step.get("id"))
    reason = result.reason or ""
    if result.status != FAILED:
        return None
    if reason.startswith("first boot timed out before "):
        return reason.removeprefix("first boot timed out before ").strip() or None
    last = result.steps[-1] if result.steps and isinstance(result.steps[-1], dict) else {}
    return str(last["id"]) if last.get("id") and reason.startswith(f"{last['id']}: ") else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class LibvirtBoot:
    """The real `boot_one`: the unit loaded as `oemkit boot` loads a built unit (the config from the image's own
    config partition, the twin of the box it was built for), booted through libvirt at the URI with its console
    streamed to OUT/.burnin/<serial>.console.log, and each `oemkit-core:` mark passed to `on_phase`."""

    def __init__(self, job: Job, on_phase: OnPhase | None = None) -> None:
        assert job.catalog is not None
        self.job, self.catalog, self.on_phase = job, job.catalog, on_phase

    def __call__(self, unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
        built = appliance.load(unit.folder)
        cfg = session.parse_unit(built.config, f"{built.image} (config partition)")
        made_for = (built.serial, str(built.manifest.get("model") or cfg.model))
        run = session.prepare_config(cfg, built.config, str(built.image), self.catalog, None, None,
                                     session.host_memory_mib(), box=made_for)  # fmt: skip
        model = self.catalog.get(run.twin.model_id)
        assert model is not None  # prepare_config found it
        image_sha256 = sha256_file(built.image)  # the file as shipped, before libvirt reads it

        def echo(line: str) -> None:
            if self.on_phase is not None and (mark := _MARK.search(line)):
                self.on_phase(unit, mark.group(1))

        path = self.job.console_log(unit)
        with open_stream(path, force=self.job.force) as log:
            try:
                done = virt.boot(run, built, appliance.boot_device(model), self.job.vars_fd, uri=uri,
                                 domain_type=self.job.domain_type, timeout=self.job.timeout, log=log, echo=echo,
                                 cancel=cancel)  # fmt: skip
            except OemkitError as exc:  # TwinError: libvirt refused the twin; this unit's log says how far it got
                if cancel.is_set():
                    raise virt.Cancelled("interrupted") from None
                return error(unit, uri, str(exc), path)
        r = done.result
        status = r.status if r.status in (READY, FAILED, TIMEOUT) else FAILED  # the status line's contract
        return UnitResult(
            unit.serial, unit.model, status, FIRST_BOOT, r.reason, failing_step(r), str(unit.folder),
            run.twin.model_id, uri, boot_seconds=round(r.seconds, 2), boot=r.split(),
            phases={k: round(v, 2) for k, v in r.phases.items()}, boots=r.boots, bank=r.bank, pcr15=r.pcr15,
            pcr15_expected=built.pcr15_expected, pcr15_match=appliance.pcr15_matches(built.pcr15_expected, r.pcr15),
            disk_sha256=done.disk_sha256, image=str(built.image), image_sha256=image_sha256, console_log=str(path),
            cleaned=[*self.job.cleaned.get(unit.serial, []), *done.cleaned],
        )  # fmt: skip
