"""The month grid, Chinese New Year and seasonal profiles.

Months are integers counted from 1970-01 (numpy's datetime64[M]); days are integers from
1970-01-01 (Arrow's date32), so every date computation stays vectorised.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

# Spring Festival (lunar new year's day). Factories and offices close from about a week before
# to ten days after it, which is what makes late Jan / Feb the weakest month of the year.
SPRING_FESTIVAL = {
    2010: "02-14", 2011: "02-03", 2012: "01-23", 2013: "02-10", 2014: "01-31", 2015: "02-19",
    2016: "02-08", 2017: "01-28", 2018: "02-16", 2019: "02-05", 2020: "01-25", 2021: "02-12",
    2022: "02-01", 2023: "01-22", 2024: "02-10", 2025: "01-29", 2026: "02-17", 2027: "02-06",
    2028: "01-26", 2029: "02-13", 2030: "02-03", 2031: "01-23", 2032: "02-11", 2033: "01-31",
    2034: "02-19", 2035: "02-08", 2036: "01-28", 2037: "02-15", 2038: "02-04", 2039: "01-24",
    2040: "02-12",
}
HOLIDAY_BEFORE, HOLIDAY_AFTER = 7, 10       # days of reduced activity around the festival
HOLIDAY_WEIGHT, WEEKEND_WEIGHT, GOLDEN_WEEK_WEIGHT = 0.35, 0.35, 0.4

# Month-of-year sales profiles (Jan..Dec), before the holiday effect.
SALES_SEASON = {
    "flat":         (1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.03, 1.12),
    "retail":       (1.15, 1.05, 0.92, 0.93, 0.98, 1.00, 0.95, 0.95, 0.98, 1.05, 1.10, 1.20),
    "construction": (0.75, 0.70, 0.95, 1.05, 1.05, 1.00, 0.90, 0.90, 1.05, 1.10, 1.15, 1.35),
    "harvest":      (0.80, 0.75, 0.85, 0.90, 0.95, 1.00, 1.05, 1.10, 1.30, 1.35, 1.20, 1.00),
    "hospitality":  (1.10, 1.10, 0.90, 0.95, 1.05, 0.95, 1.10, 1.15, 0.95, 1.20, 0.90, 1.00),
    "year_end":     (0.95, 0.90, 0.95, 1.00, 1.00, 1.02, 0.98, 0.98, 1.02, 1.00, 1.05, 1.20),
}
# Month-of-year electricity profiles: air conditioning peaks in July-August.
POWER_SEASON = {
    "flat":    (1.00, 0.95, 1.00, 1.00, 1.00, 1.02, 1.05, 1.05, 1.00, 1.00, 1.00, 1.02),
    "cooling": (1.05, 0.95, 0.85, 0.85, 0.95, 1.15, 1.35, 1.35, 1.10, 0.90, 0.90, 1.05),
    "irrigation": (0.70, 0.70, 0.90, 1.10, 1.25, 1.35, 1.30, 1.20, 1.00, 0.90, 0.80, 0.75),
}


def month_of(day_or_date) -> int:
    """Month index (months since 1970-01) of a date."""
    return int(np.datetime64(day_or_date, "M").astype(np.int64))


def month_of_days(days) -> np.ndarray:
    """Month index of each day (days since 1970-01-01)."""
    return np.asarray(days, np.int64).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def month_start_day(months) -> np.ndarray:
    """First day (days since 1970-01-01) of each month index."""
    return np.asarray(months, np.int64).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def month_end_day(months) -> np.ndarray:
    return month_start_day(np.asarray(months, np.int64) + 1) - 1


def calendar_month(months) -> np.ndarray:
    """1..12 for each month index."""
    return np.asarray(months, np.int64) % 12 + 1


def is_month_end(d: dt.date) -> bool:
    return (d + dt.timedelta(days=1)).day == 1


@dataclasses.dataclass(frozen=True)
class MonthGrid:
    """The M data months ending with end_date's month, plus a burn-in before them.

    Window month w = 0..M-1 is month index `first + w`; burn-in months have w < 0 and exist only
    inside the risk simulation (so the window starts with a portfolio already in motion).
    """
    first: int          # month index of window month 0
    months: int         # M
    burn_in: int

    @property
    def last(self) -> int:
        return self.first + self.months - 1

    def index(self, w) -> np.ndarray:
        return self.first + np.asarray(w, np.int64)


def make_grid(end_date: dt.date, months: int, burn_in: int) -> MonthGrid:
    return MonthGrid(first=month_of(end_date) - months + 1, months=months, burn_in=burn_in)


def festival_day(year: int) -> int:
    if year not in SPRING_FESTIVAL:
        raise ValueError(f"no Spring Festival date for {year}; the generator covers "
                         f"{min(SPRING_FESTIVAL)}..{max(SPRING_FESTIVAL)}")
    return int(np.datetime64(f"{year}-{SPRING_FESTIVAL[year]}", "D").astype(np.int64))


def daily_activity(first_month: int, last_month: int) -> tuple[np.ndarray, np.ndarray]:
    """(days, weight) for every day of the months: weekends, the Spring Festival shutdown and
    the National Day golden week issue fewer invoices and burn less power."""
    d0, d1 = int(month_start_day([first_month])[0]), int(month_end_day([last_month])[0])
    days = np.arange(d0, d1 + 1)
    weekday = (days + 3) % 7                           # 1970-01-01 was a Thursday (3)
    weight = np.where(weekday >= 5, WEEKEND_WEIGHT, 1.0)
    years = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    for y in np.unique(years):
        f = festival_day(int(y))
        weight[(days >= f - HOLIDAY_BEFORE) & (days <= f + HOLIDAY_AFTER)] = HOLIDAY_WEIGHT
        golden = int(np.datetime64(f"{y}-10-01", "D").astype(np.int64))
        weight[(days >= golden) & (days < golden + 7)] = GOLDEN_WEEK_WEIGHT
    return days, weight


def monthly_activity(first_month: int, last_month: int) -> np.ndarray:
    """Working-activity index per month (1.0 = an average month), from the daily weights."""
    days, weight = daily_activity(first_month, last_month)
    month = month_of_days(days) - first_month
    total = np.bincount(month, weights=weight)
    return total / (21.7 + 8.7 * WEEKEND_WEIGHT)     # an ordinary month: ~21.7 weekdays
