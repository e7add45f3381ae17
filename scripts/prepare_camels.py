"""Convert a CAMELS-US folder into the two CSV files `forecast` reads for many series.

    python scripts/prepare_camels.py ../shared/data/camels_us_19 --output camels_us_19.csv [--basins FILE]

Reads the NLDAS forcing files (`basin_mean_forcing/nldas/**/ID_lump_nldas_forcing_leap.txt`), the USGS flow files
(`usgs_streamflow/**/ID_streamflow_qc.txt`) and the attribute tables (`camels_attributes_v2.0/camels_*.txt`), with or
without the region folders (01..18) between. Writes
- OUTPUT: one row per basin and forcing day, `basin,date,QObs,PRCP,SRAD,Tmax,Tmin,Vp,Dayl`, sorted by basin and date;
  QObs in mm/day from the flow in cubic feet per second and the basin area (m², third header line of the forcing file),
  empty where the flow is missing (-999) or absent; a flow day outside the forcing's days is dropped and reported;
- STATIC (default: OUTPUT with `_static` before `.csv`): one row per basin, `basin` and the 27 static attributes of
  Kratzert et al. 2019 (HESS 23:5089) in their order; a basin without an attribute row is left out and reported.
Basin ids are 8-digit strings with their leading zeros. Needs numpy and pandas only.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CUBIC_METRES_PER_CUBIC_FOOT = 0.0283168466
SECONDS_PER_DAY = 86400
MM_PER_M = 1000
MISSING_FLOW = -999.0
# The forcing columns kept, as named in the output; the file names them with units, e.g. `PRCP(mm/day)`. SWE is left
# out: it is a snow model's state, not an observation.
FORCINGS = ("PRCP", "SRAD", "Tmax", "Tmin", "Vp", "Dayl")
OUTPUT_COLUMNS = ("basin", "date", "QObs", *FORCINGS)
STATIC_ATTRIBUTES = (
    "p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "high_prec_dur", "low_prec_freq",
    "low_prec_dur", "elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max", "lai_diff", "gvf_max",
    "gvf_diff", "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity", "soil_conductivity",
    "max_water_content", "sand_frac", "silt_frac", "clay_frac", "carbonate_rocks_frac", "geol_permeability",
)
FORCING_HEADER_LINES = 4  # latitude, elevation (m), area (m²), column names
BASIN_ID = re.compile(r"\d{8}")


class PrepareError(Exception):
    """Something wrong with the input that the user can fix; main prints it as one line."""


@dataclass
class BasinReport:
    """What happened to one basin's files: `rows` forcing days kept, `missing_flow` of them without QObs,
    `dropped_flow` flow days outside the forcing's days (`dropped_with_value` of them not missing)."""

    basin: str
    rows: int
    first: str
    last: str
    missing_flow: int
    dropped_flow: int = 0
    dropped_with_value: int = 0
    dropped_range: str = ""
    flow_file: bool = True


def cfs_to_mm_per_day(flow_cfs: np.ndarray, area_m2: float) -> np.ndarray:
    """Flow in cubic feet per second -> depth of runoff over the basin in mm/day; same shape as `flow_cfs`."""
    return flow_cfs * CUBIC_METRES_PER_CUBIC_FOOT * SECONDS_PER_DAY * MM_PER_M / area_m2


def find_basin_files(root: Path, folder: str, suffix: str) -> dict[str, Path]:
    """`{basin id: path}` of the files `ID<suffix>` anywhere under `root/folder` (region folders or none)."""
    base = root / folder
    if not base.is_dir():
        raise PrepareError(f"{base} is not a folder: is {root} a CAMELS-US folder?")
    found: dict[str, Path] = {}
    for path in sorted(base.rglob(f"*{suffix}")):
        basin = path.name[: -len(suffix)]
        if not BASIN_ID.fullmatch(basin):
            continue
        if basin in found:
            raise PrepareError(f"basin {basin} has two files: {found[basin]} and {path}")
        found[basin] = path
    return found


def read_table(path: Path, **options) -> pd.DataFrame:
    """pd.read_csv(path, **options), with a file it cannot read reported in one line."""
    try:
        return pd.read_csv(path, **options)
    except (ValueError, pd.errors.ParserError) as error:  # also UnicodeDecodeError and EmptyDataError
        raise PrepareError(f"{path}: unreadable ({str(error).splitlines()[0]})") from None


def numbers(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """The column as floats; refuses text, which would otherwise pass as a missing value unnoticed."""
    try:
        return pd.to_numeric(table[column]).astype(float)
    except (ValueError, TypeError):
        raise PrepareError(f"{path}: column {column} holds a value that is not a number") from None


def dates_from(frame: pd.DataFrame, year: str, month: str, day: str, path: Path) -> pd.Series:
    """The calendar days of the year, month and day columns; refuses a date that does not exist or repeats."""
    parts = frame[[year, month, day]].set_axis(["year", "month", "day"], axis=1)
    try:
        dates = pd.to_datetime(parts)
    except (ValueError, TypeError) as error:
        raise PrepareError(f"{path}: a row's year, month and day are not a date ({error})") from None
    repeated = dates[dates.duplicated()]
    if len(repeated):
        raise PrepareError(f"{path}: day {repeated.iloc[0]:%Y-%m-%d} appears twice")
    return dates


def read_forcing(path: Path) -> tuple[pd.DataFrame, float]:
    """The forcing file's days: a frame with `date` and FORCINGS (file units), and the basin area in m²."""
    try:
        with path.open(encoding="utf-8") as reader:
            header = [reader.readline() for _ in range(FORCING_HEADER_LINES)]
    except UnicodeDecodeError:
        raise PrepareError(f"{path}: not a text file") from None
    try:
        area_m2 = float(header[2])
    except ValueError:
        found = header[2].strip()
        raise PrepareError(f"{path}: the third line should be the basin area in m², found {found!r}") from None
    if not area_m2 > 0:
        raise PrepareError(f"{path}: basin area {area_m2} m² is not positive")
    # `PRCP(mm/day)` -> `PRCP`, matched case-blind so the lower-case names of the other CAMELS forcings work too.
    canonical = {name.lower(): name for name in ("Year", "Mnth", "Day", *FORCINGS)}
    names = [canonical.get(name.split("(")[0].lower(), name) for name in header[3].split()]
    absent = [name for name in canonical.values() if name not in names]
    if absent:
        raise PrepareError(f"{path}: no column {', '.join(absent)} in the fourth line {header[3].strip()!r}")
    table = read_table(path, sep=r"\s+", skiprows=FORCING_HEADER_LINES, header=None, names=names,
                       usecols=list(canonical.values()))
    frame = pd.DataFrame({"date": dates_from(table, "Year", "Mnth", "Day", path)})
    for name in FORCINGS:
        frame[name] = numbers(table, name, path)
    return frame, area_m2


def read_streamflow(path: Path, basin: str) -> pd.DataFrame:
    """The flow file's days: a frame with `date` and `flow_cfs` (NaN where the file has -999 or a negative value)."""
    table = read_table(path, sep=r"\s+", header=None, names=["gauge", "year", "month", "day", "flow", "flag"],
                       dtype={"gauge": str})
    # A renamed or concatenated file would otherwise give one basin another's flow.
    strangers = table.loc[table["gauge"] != basin, "gauge"]
    if len(strangers):
        raise PrepareError(f"{path}: holds flow of gauge {strangers.iloc[0]}, not {basin}")
    flow = numbers(table, "flow", path)
    # -999 marks a missing day; no flow is negative, so any other negative value is treated the same way.
    return pd.DataFrame({"date": dates_from(table, "year", "month", "day", path), "flow_cfs": flow.where(flow >= 0)})


def prepare_basin(basin: str, forcing_path: Path, flow_path: Path | None) -> tuple[pd.DataFrame, BasinReport]:
    """One basin's rows (OUTPUT_COLUMNS, the forcing's days in order) and what was kept, missing and dropped."""
    forcing, area_m2 = read_forcing(forcing_path)
    forcing = forcing.sort_values("date", ignore_index=True)
    report = BasinReport(basin, len(forcing), "", "", 0, flow_file=flow_path is not None)
    if flow_path is None:
        qobs = np.full(len(forcing), np.nan)
    else:
        flow = read_streamflow(flow_path, basin)
        outside = flow[~flow["date"].isin(forcing["date"])]
        if len(outside):
            report.dropped_flow = len(outside)
            report.dropped_with_value = int(outside["flow_cfs"].notna().sum())
            report.dropped_range = f"{outside['date'].min():%Y-%m-%d}..{outside['date'].max():%Y-%m-%d}"
        cfs = forcing[["date"]].merge(flow, on="date", how="left")["flow_cfs"].to_numpy(dtype=float)
        qobs = cfs_to_mm_per_day(cfs, area_m2)
    rows = pd.DataFrame({"basin": basin, "date": forcing["date"].dt.strftime("%Y-%m-%d"), "QObs": qobs})
    rows[list(FORCINGS)] = forcing[list(FORCINGS)].to_numpy()
    report.missing_flow = int(np.isnan(qobs).sum())
    if len(rows):
        report.first, report.last = rows["date"].iloc[0], rows["date"].iloc[-1]
    return rows, report


def read_attributes(folder: Path) -> pd.DataFrame:
    """STATIC_ATTRIBUTES of every basin in the `camels_*.txt` tables (';'-separated, keyed by gauge_id), indexed by the
    8-digit id; shape (basins, 27)."""
    paths = sorted(folder.glob("camels_*.txt")) if folder.is_dir() else []
    if not paths:
        raise PrepareError(f"no attribute tables camels_*.txt in {folder}")
    tables = []
    for path in paths:
        table = read_table(path, sep=";", dtype={"gauge_id": str})
        if "gauge_id" not in table.columns:
            raise PrepareError(f"{path}: no gauge_id column")
        table["gauge_id"] = table["gauge_id"].str.strip()
        repeated = table["gauge_id"][table["gauge_id"].duplicated()]
        if len(repeated):
            raise PrepareError(f"{path}: basin {repeated.iloc[0]} has two rows")
        tables.append(table.set_index("gauge_id")[[c for c in table.columns if c in STATIC_ATTRIBUTES]])
    attributes = pd.concat(tables, axis=1, join="outer")
    absent = [name for name in STATIC_ATTRIBUTES if name not in attributes.columns]
    if absent:
        raise PrepareError(f"{folder}: no attribute {', '.join(absent)} in camels_*.txt")
    # CAMELS writes a missing value as NA, which read_csv already reads as empty; other text is reported as empty too.
    attributes = attributes[list(STATIC_ATTRIBUTES)].apply(pd.to_numeric, errors="coerce")
    attributes.index.name = "basin"
    return attributes


def read_basin_list(path: Path) -> list[str]:
    """The 8-digit basin ids in `path`, one a line (blank lines skipped), in file order without repeats."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise PrepareError(f"cannot read the basin list {path}: {error.strerror}") from None
    basins: list[str] = []
    for number, line in enumerate(lines, start=1):
        basin = line.strip()
        if not basin:
            continue
        if not BASIN_ID.fullmatch(basin):
            raise PrepareError(f"{path} line {number}: {basin!r} is not an 8-digit basin id (leading zeros lost?)")
        if basin not in basins:
            basins.append(basin)
    return basins


def summary_line(report: BasinReport) -> str:
    """One line per basin: rows, first and last day, days without QObs, and flow days dropped."""
    line = (f"{report.basin}: {report.rows} rows {report.first}..{report.last}, "
            f"QObs missing on {report.missing_flow} days")
    if not report.flow_file:
        line += " (no streamflow file)"
    if report.dropped_flow:
        line += (f"; dropped {report.dropped_flow} flow days outside the forcing's days ({report.dropped_range}, "
                 f"{report.dropped_with_value} with a value)")
    return line


def static_path_for(output: Path) -> Path:
    """OUTPUT with `_static` before the suffix: camels.csv -> camels_static.csv."""
    return output.with_name(f"{output.stem}_static{output.suffix or '.csv'}")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("camels", type=Path, help="CAMELS-US folder (basin_mean_forcing/, usgs_streamflow/, "
                                                   "camels_attributes_v2.0/)")
    parser.add_argument("--output", type=Path, help="long CSV to write (default: FOLDER_NAME.csv here)")
    parser.add_argument("--static", type=Path, help="static CSV to write (default: OUTPUT with _static)")
    parser.add_argument("--basins", type=Path, help="only these basins: a file with one 8-digit id a line")
    return parser.parse_args(argv)


def select_basins(forcing_files: dict[str, Path], basin_list: Path | None) -> list[str]:
    """The basins to convert, sorted: all with a forcing file, or those of `basin_list` that have one (the others are
    reported)."""
    if basin_list is None:
        return sorted(forcing_files)
    wanted = read_basin_list(basin_list)
    without = [basin for basin in wanted if basin not in forcing_files]
    if without:
        print(f"no forcing file, skipped: {', '.join(without)}")
    basins = sorted(basin for basin in wanted if basin in forcing_files)
    if not basins:
        raise PrepareError(f"none of the {len(wanted)} basins of {basin_list} has a forcing file")
    return basins


def prepare(camels: Path, output: Path, static: Path, basin_list: Path | None = None) -> list[BasinReport]:
    """Write the long CSV `output` and the static CSV `static` for the basins of `camels`; print what was done."""
    forcing_files = find_basin_files(camels, "basin_mean_forcing/nldas", "_lump_nldas_forcing_leap.txt")
    if not forcing_files:
        raise PrepareError(f"no NLDAS forcing files (*_lump_nldas_forcing_leap.txt) under {camels}/basin_mean_forcing")
    flow_files = find_basin_files(camels, "usgs_streamflow", "_streamflow_qc.txt")
    basins = select_basins(forcing_files, basin_list)
    attributes = read_attributes(camels / "camels_attributes_v2.0")
    frames, reports = [], []
    for basin in basins:
        rows, report = prepare_basin(basin, forcing_files[basin], flow_files.get(basin))
        frames.append(rows)
        reports.append(report)
        print(summary_line(report))
    chosen = static_rows(attributes, basins, static.name)
    write_outputs(pd.concat(frames, ignore_index=True), chosen, output, static)
    return reports


def static_rows(attributes: pd.DataFrame, basins: list[str], static_name: str) -> pd.DataFrame:
    """The attribute rows of `basins` (those that have one), shape (basins, 27); prints who has none or gaps."""
    without = [basin for basin in basins if basin not in attributes.index]
    if without:
        print(f"no attribute row, left out of {static_name}: {', '.join(without)}")
    chosen = attributes.loc[[basin for basin in basins if basin in attributes.index]]
    incomplete = chosen.index[chosen.isna().any(axis=1)].tolist()
    if incomplete:
        print(f"attribute values empty for: {', '.join(incomplete)}")
    return chosen


def write_outputs(rows: pd.DataFrame, attributes: pd.DataFrame, output: Path, static: Path) -> None:
    """The long CSV (OUTPUT_COLUMNS) and the static CSV (`basin` and STATIC_ATTRIBUTES), and a line saying where."""
    for path in (output, static):
        path.parent.mkdir(parents=True, exist_ok=True)
    # Seven significant digits write the forcings exactly as the files give them (two decimals, at most five digits
    # before the point) and QObs far finer than the flow is measured.
    rows[list(OUTPUT_COLUMNS)].to_csv(output, index=False, float_format="%.7g")
    attributes.to_csv(static)
    print(f"wrote {output} ({len(rows)} rows, {rows['basin'].nunique()} basins) and {static} "
          f"({len(attributes)} basins, {len(STATIC_ATTRIBUTES)} attributes)")


def main(argv: list[str] | None = None) -> int:
    """Run the conversion; a problem with the input ends in one line on stderr and exit code 2."""
    arguments = parse_arguments(argv)
    output = arguments.output or Path(f"{arguments.camels.resolve().name}.csv")
    static = arguments.static or static_path_for(output)
    started = time.perf_counter()
    try:
        prepare(arguments.camels, output, static, arguments.basins)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
