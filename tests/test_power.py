"""The Jetson power readers on real output: tegrastats lines and ``nvpmodel -q`` as users posted
them on GitHub (cited per case), the INA3221 hwmon layout of the kernel's documentation, and the
energy integral against its closed form."""
import time

import numpy as np
import pytest

from layover_edge.apps.power import Ina3221, PowerMeter, parse_nvpmodel, parse_tegrastats, total_mw

TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it

# AGX Orin, JetPack 6: GDWR/jetson_exporter#14 (issue description, 2025-04-11)
AGX_ORIN = ("04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729,"
            "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ "
            "0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C "
            "CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW "
            "VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW")
# JetPack 4 (no units, current/average): FindHao/tx-utils#3 (issue description, 2019-09-05)
JETPACK4 = ("RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] EMC_FREQ 0% "
            "GR3D_FREQ 0% PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C thermal@41.9C Tdiode@41.25C "
            "VDD_SYS_GPU 153/158 VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 VDD_IN 3140/3208 VDD_SYS_CPU 536/590 "
            "VDD_SYS_DDR 557/601")
# AGX Xavier, JetPack 4.2 (short rail names): martinkersner/gtop#7 (comment by alexis-gruet-deel, 2019-06-17)
XAVIER = ("RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,"
          "0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C "
          "CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306")


def test_tegrastats_agx_orin_sums_its_rails():
    rails = parse_tegrastats(AGX_ORIN)
    assert rails == {"VDD_GPU_SOC": 2340, "VDD_CPU_CV": 390, "VIN_SYS_5V0": 4025, "NC": 0, "VDDQ_VDD2_1V8AO": 301}
    assert total_mw(rails) == 2340 + 390 + 4025 + 301  # no VDD_IN on the AGX Orin's monitors


def test_tegrastats_jetpack4_takes_vdd_in_and_the_current_value():
    rails = parse_tegrastats(JETPACK4)
    assert rails["VDD_IN"] == 3140 and rails["VDD_SYS_GPU"] == 153 and len(rails) == 6
    assert total_mw(rails) == 3140


def test_tegrastats_xavier_short_names_and_no_memory_fields():
    rails = parse_tegrastats(XAVIER)
    assert rails == {"GPU": 463, "CPU": 618, "SOC": 2936, "CV": 0, "VDDRQ": 309, "SYS5V": 3306}  # not RAM/SWAP
    assert total_mw(parse_tegrastats("RAM 2020/7852MB (lfb 1164x4MB)")) is None


@pytest.mark.parametrize("text,want", [
    ("NV Power Mode: MAXN\n0\n", {"power_mode": "MAXN", "power_mode_id": 0}),  # anduril/jetpack-nixos#460
    ("NV Power Mode: 5W\n1\n", {"power_mode": "5W", "power_mode_id": 1}),      # NVIDIA-AI-IOT/jetbot#49
    ("NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13\n", {}),  # ibid., without sudo
])
def test_nvpmodel(text, want):
    assert parse_nvpmodel(text) == want


def hwmon(root, label_mv_ma, name="ina3221"):
    """A hwmon device laid out as Documentation/hwmon/ina3221.rst describes it."""
    dev = root / f"hwmon{len(list(root.glob('hwmon*')))}"
    dev.mkdir(parents=True)
    (dev / "name").write_text(name + "\n")
    for i, (label, mv, ma) in enumerate(label_mv_ma, 1):
        (dev / f"in{i}_label").write_text(label + "\n")
        (dev / f"in{i}_input").write_text(f"{mv}\n")
        (dev / f"curr{i}_input").write_text(f"{ma}\n")
    return dev


def test_ina3221_sysfs(tmp_path):
    hwmon(tmp_path, [("x", 1, 1)], name="cpu_thermal")  # another hwmon device: ignored
    hwmon(tmp_path, [("VDD_IN", 5000, 960), ("VDD_CPU_GPU_CV", 5000, 100), ("VDD_SOC", 5000, 280)])
    ina = Ina3221.find(tmp_path)
    assert [c[0] for c in ina.channels] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    rails = ina.read()
    assert rails == {"VDD_IN": 4800.0, "VDD_CPU_GPU_CV": 500.0, "VDD_SOC": 1400.0} and total_mw(rails) == 4800.0
    assert Ina3221.find(tmp_path / "none") is None


def test_meter_samples_the_sysfs_rails(tmp_path):
    dev = hwmon(tmp_path, [("VDD_GPU_SOC", 5000, 400), ("NC", 0, 0), ("VIN_SYS_5V0", 5000, 800)])
    meter = PowerMeter.open(tmp_path)
    assert meter.source == "ina3221 sysfs"
    meter.start()
    time.sleep(0.1)
    (dev / "curr1_input").write_text("1400\n")  # the load rises by 5 W
    time.sleep(0.1)
    meter.stop()
    assert set(meter.mw) == {6000.0, 11000.0} and meter.times == sorted(meter.times)


def test_energy_integrates_the_interpolated_power():
    meter = PowerMeter("test", 0.1, times=[0.0, 1.0, 2.0, 3.0], mw=[1000.0, 3000.0, 3000.0, 1000.0])
    assert meter.energy_mj([(0.0, 1.0)]) == pytest.approx(2000.0)          # a ramp 1→3 W for 1 s
    assert meter.energy_mj([(0.5, 1.5)]) == pytest.approx(0.5 * 2500 + 0.5 * 3000)
    assert meter.energy_mj([(0.0, 1.0), (2.0, 3.0)]) == pytest.approx(4000.0)
    assert meter.mean_mw(1.0, 2.0) == pytest.approx(3000.0)
    t = np.linspace(0, 3, 301)  # a dense check against numpy's own integral of the same line
    assert meter.energy_mj([(0.2, 2.7)]) == pytest.approx(
        TRAPEZOID(np.interp(t[20:271], meter.times, meter.mw), t[20:271]), rel=1e-9)
    assert PowerMeter("test", 0.1, times=[0.0], mw=[1.0]).energy_mj([(0.0, 1.0)]) is None
