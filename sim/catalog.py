"""The simulated region: two management units, their organisations and people, and a dozen
instruments with the national platform's fields. Used by the demo and the benchmarks.

The usage parameters aim at the published reference figures (domain notes): a few hundred to
about 1,500 running hours per instrument and year, and an external share around 40 % in Inner
Mongolia, with the spread real fleets show (a cryogenic NMR with an overnight queue, an XRD used
mostly by outside companies, an out-of-scope surface-area analyser used a little).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date

from sim.model import InstrumentSpec, Org, Person, Power, UnitSpec

IMU = UnitSpec("imu", "内蒙古大学分析测试中心", Org("org-imu", "内蒙古大学", "university"), "呼和浩特",
               (Org("org-imu-hosp", "内蒙古大学附属医院", "hospital"),))
BTRI = UnitSpec("btri", "包头稀土研究院", Org("org-btri", "包头稀土研究院", "institute"), "包头",
                (Org("org-nrare", "中国北方稀土(集团)高科技股份有限公司", "enterprise"),))
UNITS = (IMU, BTRI)

EXTERNAL_ORGS = (
    Org("org-imau", "内蒙古农业大学", "university"),
    Org("org-yili", "内蒙古伊利实业集团股份有限公司", "enterprise"),
    Org("org-baogang", "包头钢铁(集团)有限责任公司", "enterprise"),
    Org("org-imust", "内蒙古科技大学", "university"),
    Org("org-mengcao", "蒙草生态环境(集团)股份有限公司", "enterprise"),
    Org("org-startup-xt", "包头稀途新材料科技有限公司", "startup"),
    Org("org-person", "个人用户", "individual"),
)

_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红娥玲芬燕彬鑫宇浩然子轩梓涵"
_PINYIN = ("wang li zhang liu chen yang zhao huang zhou wu xu sun hu zhu gao lin he guo ma luo liang song zheng "
           "xie han tang feng yu dong xiao cheng cao yuan deng xu2 fu shen zeng peng lv").split()


def _people(unit: UnitSpec, rng: random.Random) -> list[Person]:
    out: list[Person] = []

    def add(org: Org, n: int, external: bool, tag: str) -> None:
        for _ in range(n):
            k = len(out)
            s = rng.randrange(len(_SURNAMES))
            name = _SURNAMES[s] + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
            login = f"{_PINYIN[s]}.{tag}{k:02d}"
            out.append(Person(f"{unit.id}-p{k:02d}", name, org.id, unit.id, login, external))

    add(unit.org, 10, False, "in")
    for aff in unit.affiliated:
        add(aff, 3, False, "af")
    others = [o for o in EXTERNAL_ORGS] + [u.org for u in UNITS if u.id != unit.id]
    for org in others:
        add(org, 2, True, "ex")
    out.append(Person(f"{unit.id}-guest", "访客", unit.org.id, unit.id, "guest", False, mapped=False))
    return out


PEOPLE: tuple[Person, ...] = tuple(p for u in UNITS for p in _people(u, random.Random(f"people:{u.id}")))
ORGS: tuple[Org, ...] = tuple(({o.id: o for u in UNITS for o in (u.org, *u.affiliated)}
                               | {o.id: o for o in EXTERNAL_ORGS}).values())


@dataclass(frozen=True)
class Registry:
    """National platform fields that are not about usage (written to `instruments`)."""

    internal_no: str
    accepted_on: date
    registered_on: date | None
    booked_on: date
    funding_source: str
    source: str = "购置"
    sharing_mode: str = "外部共享"
    service_content: str = ""
    main_functions: str = ""
    specs: str = ""
    internal_price: int = 100  # CNY per hour
    external_price: int = 300


def _i(**kw: object) -> InstrumentSpec:
    return InstrumentSpec(**kw)  # type: ignore[arg-type]


INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    _i(id="imu-tem", unit_id="imu", name="透射电子显微镜", name_en="Transmission electron microscope", category="通用",
       original_value=8_600_000, detection="power", classification_code="03040101", model="Talos F200X",
       manufacturer="Thermo Fisher Scientific", country="美国", location="分析测试中心 101",
       power=Power(off_w=3.0, standby_w=1200.0, running_w=2900.0, dips_per_hour=0.6), always_on=True,
       sessions_per_week=6.0, run_hours=2.2, external_share=0.3),
    _i(id="imu-nmr", unit_id="imu", name="核磁共振波谱仪", name_en="NMR spectrometer 600 MHz", category="通用",
       original_value=5_200_000, detection="serial", dialect="scpi", classification_code="03030701",
       model="AVANCE NEO 600", manufacturer="Bruker", country="德国", location="分析测试中心 105", always_on=True,
       sessions_per_week=9.0, run_hours=0.7, overnight=0.25, external_share=0.2, faults_per_year=1.0),
    _i(id="imu-xrd", unit_id="imu", name="X射线衍射仪", name_en="X-ray diffractometer", category="通用",
       original_value=1_350_000, detection="serial", dialect="line", classification_code="03040702",
       model="D8 ADVANCE", manufacturer="Bruker", country="德国", location="化学楼 201", sessions_per_week=7.0,
       run_hours=1.1, external_share=0.45),
    _i(id="imu-lcms", unit_id="imu", name="液相色谱-质谱联用仪", name_en="LC-MS", category="专用",
       original_value=2_900_000, detection="software", classification_code="03030102", model="6545 Q-TOF",
       manufacturer="Agilent", country="美国", location="生命科学楼 310", sessions_per_week=5.0, run_hours=3.0,
       hidden_post_s=300, external_share=0.35, identity="os", confirm_s=10.0),
    _i(id="imu-icpms", unit_id="imu", name="电感耦合等离子体质谱仪", name_en="ICP-MS", category="通用",
       original_value=1_800_000, detection="power_serial", classification_code="03030110", model="iCAP RQ",
       manufacturer="Thermo Fisher Scientific", country="美国", location="分析测试中心 208",
       power=Power(off_w=2.0, standby_w=250.0, running_w=1600.0), sessions_per_week=4.0, run_hours=2.0,
       external_share=0.5),
    _i(id="imu-bet", unit_id="imu", name="比表面积及孔径分析仪", name_en="Surface area analyser", category="通用",
       original_value=280_000, detection="power", classification_code="03040901", model="ASAP 2460",
       manufacturer="Micromeritics", country="美国", location="化学楼 115",
       power=Power(off_w=1.0, standby_w=60.0, running_w=420.0), sessions_per_week=2.0, run_hours=5.0,
       external_share=0.2),
    _i(id="btri-sem", unit_id="btri", name="扫描电子显微镜", name_en="Scanning electron microscope", category="通用",
       original_value=3_200_000, detection="power", classification_code="03040102", model="SU8010",
       manufacturer="Hitachi", country="日本", location="分析中心 1 楼",
       power=Power(off_w=2.0, standby_w=900.0, running_w=1900.0, dips_per_hour=0.4), always_on=True,
       sessions_per_week=8.0, run_hours=1.6, external_share=0.55),
    _i(id="btri-xrf", unit_id="btri", name="X射线荧光光谱仪", name_en="X-ray fluorescence spectrometer",
       category="通用", original_value=1_100_000, detection="serial", dialect="line", classification_code="03030601",
       model="ZSX Primus IV", manufacturer="Rigaku", country="日本", location="分析中心 2 楼", sessions_per_week=9.0,
       run_hours=0.9, external_share=0.6),
    _i(id="btri-icpoes", unit_id="btri", name="电感耦合等离子体发射光谱仪", name_en="ICP-OES", category="通用",
       original_value=900_000, detection="software", classification_code="03030302", model="Avio 550",
       manufacturer="PerkinElmer", country="美国", location="分析中心 2 楼", sessions_per_week=6.0, run_hours=1.8,
       hidden_post_s=180, external_share=0.5, confirm_s=10.0),
    _i(id="btri-tga", unit_id="btri", name="同步热分析仪", name_en="Simultaneous thermal analyser", category="专用",
       original_value=650_000, detection="power", classification_code="03040301", model="STA 449 F5",
       manufacturer="NETZSCH", country="德国", location="材料楼 3 楼",
       power=Power(off_w=2.0, standby_w=210.0, running_w=90.0, ramp_s=4.0), sessions_per_week=3.0,
       run_hours=3.5, external_share=0.4),
    _i(id="btri-ppms", unit_id="btri", name="综合物性测量系统", name_en="Physical property measurement system",
       category="专用", original_value=6_800_000, detection="serial", dialect="scpi", classification_code="03040501",
       model="PPMS DynaCool", manufacturer="Quantum Design", country="美国", location="材料楼 1 楼",
       always_on=True, sessions_per_week=3.0, run_hours=6.0, overnight=0.5, external_share=0.3),
    _i(id="btri-gdms", unit_id="btri", name="辉光放电质谱仪", name_en="Glow discharge mass spectrometer",
       category="专用", original_value=4_500_000, detection="software", classification_code="03030105",
       model="Element GD Plus", manufacturer="Thermo Fisher Scientific", country="美国", location="分析中心 3 楼",
       sessions_per_week=4.0, run_hours=2.5, hidden_post_s=240, external_share=0.45, identity="os", confirm_s=10.0),
)

REGISTRY: dict[str, Registry] = {
    "imu-tem": Registry("NDFX-2016-001", date(2016, 9, 20), date(2017, 3, 1), date(2016, 9, 1), "中央财政",
                        specs="加速电压 200 kV; 点分辨率 0.25 nm", internal_price=400, external_price=1200),
    "imu-nmr": Registry("NDFX-2019-004", date(2019, 6, 5), date(2019, 9, 1), date(2019, 5, 20), "中央财政",
                        specs="600 MHz; 超低温探头", internal_price=150, external_price=500),
    "imu-xrd": Registry("NDHX-2018-017", date(2018, 4, 1), date(2018, 6, 1), date(2018, 3, 15), "地方财政",
                        specs="Cu 靶; 测角精度 0.0001°", internal_price=80, external_price=260),
    "imu-lcms": Registry("NDSK-2020-033", date(2020, 11, 10), date(2021, 1, 15), date(2020, 10, 30), "单位自有",
                         specs="分辨率 40,000; 质量精度 1 ppm", internal_price=300, external_price=800),
    "imu-icpms": Registry("NDFX-2021-008", date(2021, 7, 1), date(2021, 8, 20), date(2021, 6, 20), "地方财政",
                          specs="检出限 ppt 级", internal_price=200, external_price=600),
    "imu-bet": Registry("NDHX-2022-041", date(2022, 3, 1), date(2022, 4, 1), date(2022, 2, 20), "单位自有",
                        sharing_mode="内部共享", internal_price=60, external_price=150),
    "btri-sem": Registry("BTXT-2017-002", date(2017, 5, 12), date(2017, 7, 1), date(2017, 5, 1), "中央财政",
                         specs="分辨率 1.0 nm @ 15 kV", internal_price=200, external_price=600),
    "btri-xrf": Registry("BTXT-2019-011", date(2019, 10, 8), date(2019, 12, 1), date(2019, 9, 25), "地方财政",
                         specs="Be~U; 4 kW 端窗铑靶", internal_price=100, external_price=350),
    "btri-icpoes": Registry("BTXT-2020-015", date(2020, 8, 18), date(2020, 10, 1), date(2020, 8, 1), "单位自有",
                            specs="波长 165-900 nm", internal_price=120, external_price=400),
    "btri-tga": Registry("BTXT-2021-020", date(2021, 4, 6), date(2021, 5, 10), date(2021, 3, 30), "单位自有",
                         specs="室温-1600 °C; 天平分辨率 0.025 μg", internal_price=90, external_price=280),
    "btri-ppms": Registry("BTXT-2022-003", date(2022, 9, 1), date(2022, 11, 1), date(2022, 8, 15), "中央财政",
                          specs="1.8-400 K; 9 T", internal_price=350, external_price=900),
    "btri-gdms": Registry("BTXT-2023-007", date(2023, 6, 20), date(2023, 8, 1), date(2023, 6, 1), "地方财政",
                          specs="检出限 ppb 级; 高纯稀土全元素分析", internal_price=500, external_price=1500),
}


def unit_of(unit_id: str) -> UnitSpec:
    return next(u for u in UNITS if u.id == unit_id)


def bench_instruments(n: int) -> list[InstrumentSpec]:
    """`n` instruments for benchmarks: the demo's dozen, then variants of them (other ids, busier or
    quieter, other external shares), so every detection kind and usage pattern is represented."""
    out = list(INSTRUMENTS[:n])
    k = 0
    while len(out) < n:
        base = INSTRUMENTS[k % len(INSTRUMENTS)]
        k += 1
        out.append(replace(base, id=f"{base.id}-{k:02d}", sessions_per_week=base.sessions_per_week * (0.6 + 0.1 * k),
                           external_share=min(0.8, base.external_share + 0.05 * (k % 4))))
    return out
