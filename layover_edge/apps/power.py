"""A Jetson's power mode, clocks and board power, for energy per image in ``bench``.

Where the numbers come from (torch-free, no root needed for the power itself):
- the power mode: ``nvpmodel -q`` prints ``NV Power Mode: <name>`` and the mode's id on the next line;
- the clocks: ``jetson_clocks --show`` (needs root on JetPack; without it the error is recorded);
- power: the board's INA3221 monitors through the kernel's hwmon sysfs (``in[123]_label``,
  ``in[123]_input`` bus voltage in mV, ``curr[123]_input`` current in mA: Documentation/hwmon/ina3221.rst),
  sampled every few ms; else ``tegrastats``, whose rails read ``NAME <now>mW/<avg>mW`` (JetPack 5/6)
  or ``NAME <now>/<avg>`` (JetPack 4).
The whole board's power is ``VDD_IN`` where the board has that rail (Orin NX/Nano, Xavier NX, Nano);
the AGX Orin's monitors have none, so there it is the sum of every rail, which is the module's draw
without the carrier board's. Energy is the power integrated over the time a model ran, so it
includes the idle floor: idle power is recorded beside it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HWMON = Path("/sys/class/hwmon")
TOTAL_RAIL = "VDD_IN"
# "VDD_GPU_SOC 2340mW/2340mW" (JetPack 5/6) or "VDD_IN 3140/3208" (JetPack 4): rail, current, average
RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
POWER_MODE = re.compile(r"NV Power Mode:\s*(.+?)\s*$", re.MULTILINE)


def parse_tegrastats(line: str) -> dict[str, float]:
    """The current power of each rail on one tegrastats line, in mW."""
    return {name: float(now) for name, now, _ in RAIL.findall(line)}


def total_mw(rails: dict[str, float]) -> float | None:
    """The board's power: VDD_IN where there is one, else the sum of the rails (AGX Orin)."""
    if not rails:
        return None
    return rails[TOTAL_RAIL] if TOTAL_RAIL in rails else float(sum(rails.values()))


def parse_nvpmodel(text: str) -> dict:
    """``nvpmodel -q``: {"power_mode": name, "power_mode_id": id or None}."""
    m = POWER_MODE.search(text)
    if not m:
        return {}
    rest = text[m.end():].split()
    return {"power_mode": m.group(1), "power_mode_id": int(rest[0]) if rest and rest[0].isdigit() else None}


def _command(args: list[str]) -> tuple[str, str | None]:
    """(stdout, None), or (whatever it printed, why it failed): ``nvpmodel -q`` without root prints the
    mode and then errors about files it cannot read (NVIDIA-AI-IOT/jetbot#49)."""
    if shutil.which(args[0]) is None:
        return "", f"{args[0]} is not on PATH"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "", f"{' '.join(args)}: {e}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        return done.stdout, f"{' '.join(args)} exited {done.returncode}" + (f": {why[0]}" if why else "")
    return done.stdout, None


def jetson_state() -> dict:
    """Power mode and clocks, with the reason where either could not be read."""
    text, why = _command(["nvpmodel", "-q"])
    out = parse_nvpmodel(text) or {"power_mode_error": why or "nvpmodel -q printed no power mode"}
    text, why = _command(["jetson_clocks", "--show"])
    out |= {"clocks": text.strip().splitlines()} if why is None else {"clocks_error": why}
    return out


@dataclass
class Ina3221:
    """The INA3221 channels under hwmon: (label, voltage file, current file) each."""

    channels: list[tuple[str, Path, Path]]

    @classmethod
    def find(cls, root: Path = HWMON) -> Ina3221 | None:
        channels = []
        for dev in sorted(root.glob("hwmon*")):
            try:
                if (dev / "name").read_text().strip() != "ina3221":
                    continue
            except OSError:
                continue
            for label in sorted(dev.glob("in[123]_label")):
                n = label.name[2]
                volt, curr = dev / f"in{n}_input", dev / f"curr{n}_input"
                name = label.read_text().strip()
                if volt.exists() and curr.exists() and name != "NC":  # NC: not connected (AGX Orin)
                    channels.append((name, volt, curr))
        return cls(channels) if channels else None

    def read(self) -> dict[str, float]:
        """mW per rail: mV × mA / 1000."""
        return {name: float(v.read_text()) * float(c.read_text()) / 1000 for name, v, c in self.channels}


@dataclass
class PowerMeter:
    """Samples the board's power in a thread: ``start``, run things, ``stop``; then ``energy_mj``
    integrates the samples over any interval of ``time.perf_counter()``."""

    source: str
    interval_s: float
    times: list[float] = field(default_factory=list)
    mw: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _process: subprocess.Popen | None = None
    _ina: Ina3221 | None = None

    @classmethod
    def open(cls, root: Path = HWMON) -> PowerMeter | None:
        """INA3221 sysfs where present, else tegrastats on PATH, else None (not a Jetson)."""
        ina = Ina3221.find(root)
        if ina is not None:
            return cls("ina3221 sysfs", 0.005, _ina=ina)
        if shutil.which("tegrastats"):
            return cls("tegrastats", 0.1)
        return None

    def _record(self, rails: dict[str, float]) -> None:
        power = total_mw(rails)
        if power is not None:
            self.times.append(time.perf_counter())
            self.mw.append(power)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self._record(self._ina.read())
            except (OSError, ValueError):
                pass  # a read racing the driver's update: take the next one
            self._stop.wait(self.interval_s)

    def _follow(self) -> None:
        for line in self._process.stdout:
            self._record(parse_tegrastats(line))

    def start(self) -> None:
        if self._ina is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
        else:
            self._process = subprocess.Popen(["tegrastats", "--interval", str(int(self.interval_s * 1000))],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def mean_mw(self, start: float, end: float) -> float | None:
        energy = self.energy_mj([(start, end)])
        return None if energy is None else energy / (end - start)

    def energy_mj(self, intervals: list[tuple[float, float]]) -> float | None:
        """mJ spent over the intervals: power interpolated linearly between samples (held at the
        first and last sample outside them), integrated; None with fewer than two samples."""
        if len(self.times) < 2:
            return None
        t, p = np.asarray(self.times), np.asarray(self.mw)
        total = 0.0
        for a, b in intervals:
            grid = np.concatenate([[a], t[(t > a) & (t < b)], [b]])
            power = np.interp(grid, t, p)
            total += float(((power[1:] + power[:-1]) / 2 * np.diff(grid)).sum())  # mW × s = mJ
        return total
