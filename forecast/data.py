"""Reading a series CSV: the time axis, its frequency, and the role of every column."""

from __future__ import annotations

import csv
import dataclasses
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import validation
from forecast.config import Config
from forecast.errors import ForecastError
from forecast.tables import is_parquet

TIME_COLUMN_NAMES = ("date", "datetime", "time", "timestamp", "ds", "period")


@dataclass(frozen=True)
class Roles:
    """Which columns feed which input. `history` is what the lstm input carries, target first."""

    target: str
    past: tuple[str, ...]
    sim: tuple[str, ...]
    bg: tuple[str, ...]
    sim_in_history: bool

    @property
    def history(self) -> tuple[str, ...]:
        return (self.target, *self.past, *(self.sim if self.sim_in_history else ()))

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.history, *self.sim, *self.bg)))


@dataclass(frozen=True)
class Series:
    """A regular time series: `values` holds the role columns as float64 (NaN where a cell is empty).

    Rows after the last observed target are the future: they can carry sim values for the forecast horizon.
    """

    path: str
    time: pd.DatetimeIndex
    time_name: str
    values: pd.DataFrame
    roles: Roles
    freq: pd.Timedelta
    columns: tuple[str, ...] = ()  # the file's named columns, time included, in file order
    left_out: tuple[tuple[str, str], ...] = ()  # (column, why) for every column that feeds no input
    business_days: bool = False  # steps are business days (freq is then one day): weekends are no gaps
    id: str = ""  # the series' id in a long file; "" for the one series of a file without an id column

    @property
    def where(self) -> str:
        """The series as messages name it: the file, and the series' id in a long file."""
        return f"{self.path}: series {self.id!r}" if self.id else self.path

    @property
    def n_observed(self) -> int:
        """Rows up to and including the last observed target."""
        observed = np.flatnonzero(self.values[self.roles.target].notna().to_numpy())
        return int(observed[-1]) + 1 if observed.size else 0


@dataclass(frozen=True)
class Collection:
    """The series of one file, in the order their ids first appear. A file without an id column is a collection of one
    series, whose id is "": every command reads files this way, so one series and many take the same path.

    `scratch` is a folder where the features of these series are built as memory-mapped files (those of a collection
    read from the data cache, see forecast.data_cache); None: in memory."""

    path: str
    series: tuple[Series, ...]
    id_name: str | None = None
    scratch: Path | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(series.id for series in self.series)

    @property
    def first(self) -> Series:
        return self.series[0]

    def select(self, ids: tuple[str, ...] | None) -> Collection:
        """The series named in `ids` (None: all), in this collection's order; an unknown id is an error."""
        if ids is None:
            return self
        if not ids:
            raise ForecastError(f"{self.path}: no series named; name at least one of {validation.listing(self.ids)}")
        unknown = [name for name in ids if name not in self.ids]
        if unknown:
            raise ForecastError(
                f"{self.path}: no series {unknown[0]!r} in column {self.id_name!r}; the file has {validation.listing(self.ids)}"
            )
        return self.keeping(tuple(series for series in self.series if series.id in ids))

    def without(self, ids: tuple[str, ...]) -> Collection:
        return self.keeping(tuple(series for series in self.series if series.id not in ids))

    def keeping(self, series: tuple[Series, ...]) -> Collection:
        """The same file with only `series`."""
        return dataclasses.replace(self, series=series)


def load_series(
    path: str | Path, config: Config, business_days: bool | None = None, warn: Callable[[str], None] | None = None
) -> Series:
    """The one series of a file without an id column (see `load_collection`)."""
    collection = load_collection(path, config, business_days, warn)
    if len(collection.series) != 1:
        raise ForecastError(f"{path}: holds {len(collection.series)} series; expected one")
    return collection.first


def load_collection(
    path: str | Path, config: Config, business_days: bool | None = None, warn: Callable[[str], None] | None = None
) -> Collection:
    """Reads `path`, finds the time axis, resolves the role of each column, and validates what the model will see.

    With `config.id_column` the file is in long format: the rows of each id form one series, with its own start, end
    and gaps, all on one step. `business_days` is the grid a saved model was trained on (its schema's); None detects it
    from the file. A last line without a line end may still be being written: it is refused, or with `warn` (commands
    that only read, such as predict), left out with a warning through it.
    """
    path = Path(path)
    frame = _read_csv(path, config, warn)
    id_name = config.id_column
    groups = _groups(frame, id_name, path, config.skip_rows)
    time_names = _time_axis(frame.head(50), path, config)[1]
    columns = frame.drop(columns=[*time_names, *([id_name] if id_name else [])])
    roles = resolve_roles(columns, path, config)
    left_out = _left_out(columns, roles, config)
    # Each series' rows one after the other, so that each is a slice: a take from the whole frame per series would
    # cost rows x series.
    ordered = np.concatenate([rows for rows, _ in groups.values()])
    if (np.diff(ordered) != 1).any():
        frame = frame.iloc[ordered]
    series, start = [], 0
    for series_id, (rows, lines) in groups.items():
        part = frame.iloc[start : start + len(rows)].reset_index(drop=True)
        start += len(rows)
        series.append(_one_series(part, series_id, lines, path, config, roles, time_names, business_days, left_out))
    steps = {(item.freq, item.business_days) for item in series}
    if len(steps) > 1:
        described = {item.id: validation.describe_grid(item.freq, item.business_days) for item in series}
        first, other = series[0], next(item for item in series if described[item.id] != described[series[0].id])
        raise ForecastError(
            f"{path}: series {first.id!r} steps by {described[first.id]} but series {other.id!r} by "
            f"{described[other.id]}; one model forecasts series of one step"
        )
    return Collection(str(path), tuple(series), id_name)


def _groups(frame: pd.DataFrame, id_name: str | None, path: Path, skip_rows: int) -> dict[str, tuple[np.ndarray, object]]:
    """Each series' rows (positions in `frame`) and what locates them in the file for messages: `skip_rows` for a
    file of one series, else the array of the rows' file lines."""
    if id_name is None:
        return {"": (np.arange(len(frame)), skip_rows)}
    ids = frame[id_name].astype(str).str.strip().where(frame[id_name].notna(), "")
    empty = np.flatnonzero((ids == "").to_numpy())
    if empty.size:
        raise ForecastError(
            f"{path}: row {validation.line_of(int(empty[0]), skip_rows)}: column {id_name!r} is empty; every row needs "
            "the id of its series"
        )
    lines = validation.line_of(np.arange(len(frame)), skip_rows)
    # One pass over the rows (a comparison per id would cost rows x series); groups in the order ids first appear.
    groups = pd.Series(np.arange(len(frame))).groupby(ids.to_numpy(), sort=False).indices
    return {series_id: (rows, lines[rows]) for series_id, rows in groups.items()}


def _one_series(frame: pd.DataFrame, series_id: str, lines, path: Path, config: Config, roles: Roles,
                time_names: tuple[str, ...], business_days: bool | None, left_out) -> Series:
    """One series from its rows; `lines` locates them in the file (see `_groups`)."""
    where = Path(f"{path}: series {series_id!r}") if series_id else path
    time, _ = _time_axis(frame, where, config, lines)
    values = validation.numeric_values(frame[list(roles.numeric)].reset_index(drop=True), where, lines)
    validation.check_order(time, where, lines)
    business = validation.business_daily(time) if business_days is None else business_days
    if business:
        validation.check_weekdays(time, where, lines)
    time, values, freq = validation.regular_grid(time, values, where, config.gaps, config.max_gap, lines, business,
                                                 roles.target)
    validation.check_target(values[roles.target], where)
    time_name = time_names[0] if len(time_names) == 1 else "time"
    return Series(
        path=str(path), time=time, time_name=time_name, values=values, roles=roles, freq=freq,
        columns=tuple(frame.columns), left_out=left_out, business_days=business, id=series_id,
    )


def _left_out(frame: pd.DataFrame, roles: Roles, config: Config) -> tuple[tuple[str, str], ...]:
    """The columns no input reads, each with the reason, so the training log can name them."""
    reasons = []
    for column in frame.columns:
        if column in roles.numeric:
            continue
        if column in config.exclude:
            reasons.append((column, "excluded"))
        elif not validation.mostly_numeric(frame[column]):
            reasons.append((column, "text; give it a role to use it"))
        else:
            reasons.append((column, "not among the past columns given"))
    return tuple(reasons)


def describe_left_out(series: Series) -> str | None:
    """One log line naming the columns left out and why, or None when every column is used."""
    if not series.left_out:
        return None
    return f"{series.path}: columns left out: " + ", ".join(f"{column} ({why})" for column, why in series.left_out)


def resolve_roles(frame: pd.DataFrame, path: Path, config: Config) -> Roles:
    """Assigns target, sim, bg and past columns; past defaults to every other numeric column."""
    if config.target in (*config.sim, *config.bg):
        raise ForecastError(f"{path}: the target {config.target!r} cannot also be a sim or bg column")
    if config.past is not None:
        past = tuple(config.past)
    else:
        taken = {config.target, *config.sim, *config.bg, *config.exclude}
        past = tuple(str(column) for column in frame.columns if column not in taken and validation.mostly_numeric(frame[column]))
    return Roles(
        target=config.target, past=past, sim=tuple(config.sim), bg=tuple(config.bg), sim_in_history=config.sim_in_history
    )


def _check_named_columns(columns: list[str], body: bytes, path: Path, config: Config) -> None:
    """Every column the configuration names must be in the header (the first line of `body`); checked before any value
    is parsed. A name that stands on a later line instead means lines of metadata above the real header."""
    if config.target is None:
        raise ForecastError(f"{path}: no target column given; pass --target with one of: {validation.listing(columns)}")
    named = [config.target, *config.sim, *config.bg, *(config.past or ()), *config.exclude,
             *([config.id_column] if config.id_column else [])]
    for column in named:
        if column in columns:
            continue
        lines = body.decode("utf-8", errors="replace").splitlines()[1:20]
        below = next((index for index, line in enumerate(lines, start=2)
                      if column in (field.strip() for field in next(csv.reader([line]), []))), None)
        if below is not None:
            raise _header_below_error(path, f"column {column!r} is not", validation.line_of(below - 2, config.skip_rows))
        raise ForecastError(f"{path}: column {column!r} not found; the file has: {validation.listing(columns)}")


SKIP_HINT = "if the file has lines before its header (station metadata), pass --skip-rows N (skip_rows = N)"


def _read_csv(path: Path, config: Config, warn: Callable[[str], None] | None) -> pd.DataFrame:
    """The file's rows, its header on line `skip_rows` + 1. The header is checked first, so that a wrong file or
    column name answers before the values are parsed (a file of a million columns takes minutes); a warning from
    pandas is a one-line error, not a note above a confusing one later."""
    if not path.is_file():
        raise ForecastError(f"{path}: file not found")
    if is_parquet(path):
        return _read_parquet(path, config)
    data = validation.without_partial_line(path.read_bytes(), path, warn)
    try:
        body = b"".join(data.splitlines(keepends=True)[config.skip_rows :]) if config.skip_rows else data
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        header = next(csv.reader([body.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")]), [])
        names = [name.strip() for name in header]
        validation.check_header(names, path)
        if body.strip():
            _check_named_columns(names, body, path, config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # index_col=False: rows with one field more than the header must not turn the first column into an index
            # An id such as a gauge number 01013500 is a name, not a number: read as text, its leading zero stays.
            frame = pd.read_csv(io.BytesIO(body), skipinitialspace=True, index_col=False,
                                dtype={config.id_column: str} if config.id_column else None,
                                keep_default_na=config.id_column is None,
                                na_values=validation.missing_markers(header, config.id_column))
        if caught:
            first = str(caught[0].message).split(". ")[0].strip()
            if "Length of header" in first:
                raise ForecastError(
                    f"{path}: rows have more fields than the header's {len(names)} names; name every column in the header"
                )
            raise ForecastError(f"{path}: pandas cannot read it cleanly ({first}); {SKIP_HINT}")
    except pd.errors.EmptyDataError:
        raise ForecastError(f"{path}: the file is empty; expected a header line and rows of values") from None
    except UnicodeDecodeError:
        raise ForecastError(
            f"{path}: line {validation.first_non_utf8_line(path)} is not UTF-8 text; re-save the file as UTF-8 CSV"
        ) from None
    except pd.errors.ParserError as exc:
        raise ForecastError(f"{path}: not a well-formed CSV ({str(exc).strip()}); {SKIP_HINT}") from None
    if frame.empty:
        raise ForecastError(f"{path}: the file has a header but no rows")
    return _without_unnamed(frame, header, path)


def _read_parquet(path: Path, config: Config) -> pd.DataFrame:
    """The rows of a Parquet file (pyarrow), checked as a CSV's header is: the same frame a CSV of the same table
    gives, with the id column as text."""
    try:
        import pyarrow.parquet as parquet

        frame = parquet.read_table(path).to_pandas()
    except ImportError:
        raise ForecastError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow, or give a CSV") from None
    except Exception as exc:  # a damaged file fails in many ways inside pyarrow; all mean the same to a user
        raise ForecastError(f"{path}: not a readable Parquet file ({type(exc).__name__}); re-export it, or give a "
                            "CSV") from None
    names = [str(name).strip() for name in frame.columns]
    validation.check_header(names, path)
    if frame.empty:
        raise ForecastError(f"{path}: the file has columns but no rows")
    if config.skip_rows:
        raise ForecastError(f"{path}: skip_rows applies to CSV files only; set it to 0 for a Parquet file")
    frame.columns = names
    if config.id_column and config.id_column in frame:
        ids = frame[config.id_column]
        frame[config.id_column] = ids.astype(str).where(ids.notna(), None)
    return frame


def _without_unnamed(frame: pd.DataFrame, header: list[str], path: Path) -> pd.DataFrame:
    """Columns with an empty name: a column of empty cells is a trailing comma, not data, and goes; one holding values
    cannot be given a role and is refused."""
    frame.columns = [str(column).strip() for column in frame.columns]
    unnamed = [index for index, name in enumerate(header) if not name.strip()]
    for index in unnamed:
        if frame.iloc[:, index].notna().any():
            raise ForecastError(
                f"{path}: column {index + 1} has values but no name in the header; name it or remove it"
            )
    return frame.drop(columns=frame.columns[unnamed])


def _time_axis(frame: pd.DataFrame, path: Path, config: Config, lines=None) -> tuple[pd.DatetimeIndex, tuple[str, ...]]:
    """Parses the time column (named in the config, found by name, or the first column of dates); `lines` locates the
    rows in the file for messages (default: `config.skip_rows`, see `validation.line_of`)."""
    lines = config.skip_rows if lines is None else lines
    if config.time_columns:
        return _split_time_axis(frame, path, config.time_columns, lines), config.time_columns
    column = config.time_column or _find_time_column(frame, path, config.skip_rows)
    if column not in frame.columns:
        raise ForecastError(f"{path}: time column {column!r} not found; the file has: {validation.listing(frame.columns)}")
    raw = frame[column]
    time = None if pd.api.types.is_numeric_dtype(raw) else _parse_dates(raw)
    if time is None or time.isna().all():
        raise ForecastError(f"{path}: column {column!r} holds no dates; name the time column with time_column")
    bad = np.flatnonzero(time.isna().to_numpy())
    if bad.size:
        raise ForecastError(
            f"{path}: row {validation.line_of(bad[0], lines)}: cannot read {raw.iloc[bad[0]]!r} in column "
            f"{column!r} as a date; fix or remove the row"
        )
    return pd.DatetimeIndex(time), (column,)


DAY_MONTH_YEAR = r"^\s*\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b"


def _parse_dates(raw: pd.Series) -> pd.Series:
    """Dates as naive timestamps; times with UTC offsets (mixed across a clock change too) are converted to UTC.

    `01/02/2020` is 1 February or 2 January: of month-first and day-first, the reading that puts the rows in order wins
    (month-first when both do), so that day-first dates are not misread as rows out of order.
    """
    readings = [False, True] if raw.astype(str).str.match(DAY_MONTH_YEAR).all() else [False]
    for dayfirst in readings:
        time = _parse_dates_as(raw, dayfirst)
        if time.notna().all() and time.is_monotonic_increasing:
            return time
    return _parse_dates_as(raw, False)


def _parse_dates_as(raw: pd.Series, dayfirst: bool) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when dayfirst cannot be honoured; the reading is checked instead
        try:
            time = pd.to_datetime(raw, errors="coerce", format="mixed", dayfirst=dayfirst)
        except ValueError:
            time = pd.to_datetime(raw, errors="coerce", format="mixed", dayfirst=dayfirst, utc=True)
    if getattr(time.dt, "tz", None) is not None:
        time = time.dt.tz_convert("UTC").dt.tz_localize(None)
    return time


def _split_time_axis(frame: pd.DataFrame, path: Path, names: tuple[str, ...], skip_rows) -> pd.DatetimeIndex:
    """A time split over columns such as year, month, day, hour."""
    allowed = {"year", "month", "day", "hour", "minute", "second"}
    for name in names:
        if name not in frame.columns:
            raise ForecastError(f"{path}: time column {name!r} not found; the file has: {validation.listing(frame.columns)}")
        if name.lower() not in allowed:
            raise ForecastError(f"{path}: time_columns may only name {', '.join(sorted(allowed))}; got {name!r}")
    parts = frame[list(names)].rename(columns=str.lower)
    time = pd.to_datetime(parts, errors="coerce")
    bad = np.flatnonzero(time.isna().to_numpy())
    if bad.size:
        raise ForecastError(
            f"{path}: row {validation.line_of(bad[0], skip_rows)}: columns {', '.join(names)} do not form a valid date"
        )
    return pd.DatetimeIndex(time)


def _find_time_column(frame: pd.DataFrame, path: Path, skip_rows: int = 0) -> str:
    for column in frame.columns:
        if column.lower() in TIME_COLUMN_NAMES:
            return column
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            parsed = pd.to_datetime(frame[column].head(20), errors="coerce", format="mixed")
            if parsed.notna().all():
                return column
    header = _header_below(frame)
    if header is not None:
        raise _header_below_error(path, "no time column is", validation.line_of(header, skip_rows))
    raise ForecastError(
        f"{path}: no time column found (looked for {', '.join(TIME_COLUMN_NAMES)} or a column of dates); "
        "name it with time_column or time_columns"
    )


def _header_below_error(path: Path, what: str, line: int) -> ForecastError:
    """The error for a header found on file line `line`, below lines of metadata: `what` is missing from line 1."""
    return ForecastError(
        f"{path}: {what} in the header line; line {line} looks like the header, so the lines above it are not data: "
        f"pass --skip-rows {line - 1} (skip_rows = {line - 1})"
    )


def _header_below(frame: pd.DataFrame) -> int | None:
    """The first of the first 20 data rows with a cell named like a time column: the real header, below metadata."""
    for row in range(min(20, len(frame))):
        if {str(value).strip().lower() for value in frame.iloc[row]} & set(TIME_COLUMN_NAMES):
            return row
    return None


