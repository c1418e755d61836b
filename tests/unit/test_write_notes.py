"""WAL positions as numbers in WAL order, and which of two notes wins (db/write_notes.py)."""

from __future__ import annotations

import pytest

from glimpse.db.write_notes import READ_THE_PRIMARY, Note, lsn_number, lsn_text, stronger


def test_positions_compare_in_wal_order_and_read_back_as_postgresql_writes_them() -> None:
    positions = ["0/0", "0/16B3748", "9/FFFFFFFF", "A/0", "16/B374D848", "FF/1"]
    numbers = [lsn_number(p) for p in positions]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert [lsn_text(n) for n in numbers] == positions
    assert lsn_number("16/b374d848") == lsn_number("16/B374D848")
    with pytest.raises(ValueError):
        lsn_number("16B374D848")


def test_the_stronger_note_sends_more_reads_to_the_primary() -> None:
    early, late = Note(lsn=5), Note(lsn=9)
    assert stronger(None, None) is None
    assert stronger(early, None) == early and stronger(None, late) == late
    assert stronger(early, late) == late == stronger(late, early)
    assert stronger(late, READ_THE_PRIMARY) == READ_THE_PRIMARY
    assert stronger(READ_THE_PRIMARY, early) == READ_THE_PRIMARY
