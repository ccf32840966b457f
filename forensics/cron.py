"""Five-field cron expressions (``minute hour day-of-month month day-of-week``), in UTC.

Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of
those. Day of week is 0-6 with 0 = Sunday (7 is accepted for Sunday too). As in Vixie cron, when
both day fields are restricted a day matches if *either* matches. Names (``mon``, ``jan``) and
``@daily``-style shortcuts are not supported: :func:`parse_cron` says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from forensics.errors import ConfigError

# (name, lowest, highest) of each field, in order.
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_SEARCH_DAYS = 366 * 5  # Feb 29 on a Monday recurs within 28 years, but nobody schedules that


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field, and whether the day fields are restricted."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, t: datetime) -> datetime:
        """The first matching minute strictly after ``t`` (aware or naive-UTC), as an aware UTC datetime."""
        t = t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)
        t = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = t.replace(hour=0, minute=0)
        for _ in range(_SEARCH_DAYS):
            if day.month in self.months and self._day_matches(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        cand = day.replace(hour=h, minute=m)
                        if cand >= t:
                            return cand
            day += timedelta(days=1)
        raise ConfigError(f"cron {self.text!r} never matches (e.g. day 31 of a 30-day month)")


def _field(text: str, name: str, lo: int, hi: int) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = _number(step_s, name) if step_s else 1
        if step < 1:
            raise ConfigError(f"cron {name}: step must be at least 1, got {step_s!r}")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a_s, b_s = rng.split("-", 1)
            a, b = _number(a_s, name), _number(b_s, name)
        else:
            a = _number(rng, name)
            b = hi if step_s else a  # "5/15" means 5-hi/15
        if not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise ConfigError(f"cron {name}: {part!r} is outside {lo}-{hi} or reversed")
        values.update(range(a, b + 1, step))
    return frozenset(values), text != "*"


def _number(s: str, name: str) -> int:
    if not s.isdigit():
        raise ConfigError(f"cron {name}: {s!r} is not a number (names like 'mon' are not supported)")
    return int(s)


def parse_cron(text: str) -> Cron:
    """Parse ``text``; raises ConfigError with one line saying which field is wrong."""
    parts = text.split()
    if len(parts) != 5:
        raise ConfigError(
            f"cron {text!r} has {len(parts)} fields, needs 5: minute hour day-of-month month day-of-week "
            "(e.g. '0 3 * * *' for 03:00 UTC daily)"
        )
    fields = [_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS)]
    weekdays = frozenset(d % 7 for d in fields[4][0])
    return Cron(text, fields[0][0], fields[1][0], fields[2][0], fields[3][0], weekdays, fields[2][1], fields[4][1])
