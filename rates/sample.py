"""The project's own sample dataset, generated deterministically as a plain-SQL dump.

Shaped like the provided dump: 20 regions in a tree, 150 ports, about 57,000
prices over January 2016 on 725 routes, with some days under 3 prices and
some with none. The same seed always gives the same bytes, so rates-seed can
recognise the data it loaded. Larger datasets (for benchmarks) continue the
same routes over more days:

    python -m rates.sample --prices 10000000 --output big.sql
    RATES_DUMP=big.sql rates-seed
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
from collections.abc import Iterator
from typing import IO

from rates.sql import sql_file

DEFAULT_PRICES = 57_000
DEFAULT_SEED = 2016
FIRST_DAY = dt.date(2016, 1, 1)
ROUTES = 725
PORTS = 150

# (slug, name, parent, country codes of its ports); roots hold no ports directly.
REGIONS: tuple[tuple[str, str, str | None, str], ...] = (
    ("east_asia", "East Asia", None, ""),
    ("china_main", "China Main", "east_asia", "CN"),
    ("china_north_main", "China North Main", "china_main", "CN"),
    ("china_east_main", "China East Main", "china_main", "CN"),
    ("china_south_main", "China South Main", "china_main", "CN HK"),
    ("japan_main", "Japan Main", "east_asia", "JP"),
    ("korea_main", "Korea Main", "east_asia", "KR"),
    ("southeast_asia", "Southeast Asia", None, ""),
    ("singapore_strait", "Singapore Strait", "southeast_asia", "SG MY"),
    ("vietnam_main", "Vietnam Main", "southeast_asia", "VN"),
    ("northern_europe", "Northern Europe", None, ""),
    ("north_europe_main", "North Europe Main", "northern_europe", "DE FR"),
    ("uk_main", "UK Main", "north_europe_main", "GB"),
    ("benelux", "Benelux", "north_europe_main", "NL BE"),
    ("scandinavia", "Scandinavia", "northern_europe", "DK"),
    ("norway_main", "Norway Main", "scandinavia", "NO"),
    ("sweden_main", "Sweden Main", "scandinavia", "SE"),
    ("baltic", "Baltic", "northern_europe", "EE LV LT"),
    ("finland_main", "Finland Main", "baltic", "FI"),
    ("mediterranean", "Mediterranean", None, "IT ES GR"),
)
ASIA = frozenset(
    (
        "china_main",
        "china_north_main",
        "china_east_main",
        "china_south_main",
        "japan_main",
        "korea_main",
        "singapore_strait",
        "vietnam_main",
    )
)

# Well-known UN/LOCODEs placed in the sample so that documentation and tests
# can name routes that always exist.
ANCHOR_PORTS: tuple[tuple[str, str, str], ...] = (
    ("CNSGH", "Shanghai", "china_east_main"),
    ("CNNGB", "Ningbo", "china_east_main"),
    ("CNYTN", "Yantian", "china_south_main"),
    ("CNTAO", "Qingdao", "china_north_main"),
    ("NLRTM", "Rotterdam", "benelux"),
    ("DEHAM", "Hamburg", "north_europe_main"),
    ("GBFXT", "Felixstowe", "uk_main"),
    ("NOOSL", "Oslo", "norway_main"),
)
# Routes with fixed character: (orig, dest, smallest and largest number of prices a day).
ANCHOR_ROUTES: tuple[tuple[str, str, int, int], ...] = (
    ("CNSGH", "NLRTM", 3, 5),  # an average every day
    ("CNYTN", "GBFXT", 0, 3),  # days with no price, with too few, and with an average
    ("CNNGB", "DEHAM", 2, 6),
    ("CNTAO", "NOOSL", 1, 4),
)
# How many prices an ordinary route has on one day: 0 to 5, 2.6 on average, so
# that 725 routes fill the default 57,000 prices in 31 days.
DAILY_COUNTS = (0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5, 5)

_SYLLABLES = (
    "ka",
    "lo",
    "mar",
    "ven",
    "si",
    "to",
    "ber",
    "na",
    "ri",
    "dal",
    "po",
    "gen",
    "ha",
    "vik",
    "sun",
    "ta",
    "mel",
    "or",
    "ban",
    "es",
)


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _ports(rng: random.Random) -> list[tuple[str, str, str]]:
    ports = list(ANCHOR_PORTS)
    taken = {code for code, _, _ in ports}
    holders = [(slug, countries.split()) for slug, _, _, countries in REGIONS if countries]
    while len(ports) < PORTS:
        slug, countries = holders[len(ports) % len(holders)]
        code = rng.choice(countries) + "".join(
            rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ")  # pragma: allowlist secret (an alphabet)
            for _ in range(3)
        )
        if code not in taken:
            taken.add(code)
            ports.append((code, _name(rng), slug))
    return ports


def _routes(
    rng: random.Random, ports: list[tuple[str, str, str]]
) -> list[tuple[str, str, int, int]]:
    asia = [code for code, _, region in ports if region in ASIA]
    europe = [code for code, _, region in ports if region not in ASIA]
    routes = list(ANCHOR_ROUTES)
    seen = {(o, d) for o, d, _, _ in routes}
    while len(routes) < ROUTES:
        # Most trade flows from Asia to Europe; some the other way.
        orig, dest = rng.choice(asia), rng.choice(europe)
        if rng.random() < 0.2:
            orig, dest = dest, orig
        if (orig, dest) not in seen:
            seen.add((orig, dest))
            routes.append((orig, dest, -1, -1))
    return routes


def _price_lines(
    rng: random.Random, routes: list[tuple[str, str, int, int]], prices: int
) -> Iterator[str]:
    """COPY text lines, one price each, day by day over all routes, `prices` lines in all."""
    base = [rng.randint(400, 3000) for _ in routes]
    left = prices
    day = FIRST_DAY
    one = dt.timedelta(days=1)
    counts = DAILY_COUNTS
    while left > 0:
        iso = day.isoformat()
        for i, (orig, dest, low, high) in enumerate(routes):
            n = rng.choice(counts) if low < 0 else rng.randint(low, high)
            # A slow random walk, as freight rates move from day to day.
            base[i] = max(100, base[i] + rng.randint(-15, 15))
            b = base[i]
            for _ in range(min(n, left)):
                yield f"{orig}\t{dest}\t{iso}\t{b + rng.randint(-40, 40)}\n"
            left -= n
            if left <= 0:
                return
        day += one


def write_dump(out: IO[str], prices: int = DEFAULT_PRICES, seed: int = DEFAULT_SEED) -> None:
    """Write the sample dataset as a plain-SQL dump, in pg_dump's order."""
    rng = random.Random(seed)  # noqa: S311 -- sample data, not secrets
    ports = _ports(rng)
    routes = _routes(rng, ports)
    out.write(f"-- Generated by rates.sample (prices={prices}, seed={seed}); do not edit.\n\n")
    out.write(sql_file("schema.sql"))
    out.write("\nCOPY regions (slug, name, parent_slug) FROM stdin;\n")
    for slug, name, parent, _ in REGIONS:
        out.write(f"{slug}\t{name}\t{parent if parent else chr(92) + 'N'}\n")
    out.write("\\.\n\nCOPY ports (code, name, parent_slug) FROM stdin;\n")
    for code, name, region in ports:
        out.write(f"{code}\t{name}\t{region}\n")
    out.write("\\.\n\nCOPY prices (orig_code, dest_code, day, price) FROM stdin;\n")
    out.writelines(_price_lines(rng, routes, prices))
    out.write("\\.\n\n")
    out.write(sql_file("constraints.sql"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rates.sample", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--prices", type=int, default=DEFAULT_PRICES, help="rows in prices")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--output", "-o", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    if args.prices < 0:
        parser.error("--prices must be zero or more")
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="\n") as out:
            write_dump(out, args.prices, args.seed)
    else:
        write_dump(sys.stdout, args.prices, args.seed)


if __name__ == "__main__":
    main()
