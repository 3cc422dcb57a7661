"""``biotrove info`` of a metadata table (or any other table)."""

from __future__ import annotations

from pathlib import Path

from biotrove_cli.core.inspect.report import Report


def describe_table(path: Path) -> Report:
    from biotrove_cli.core.errors import SchemaError
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import RANKS
    from biotrove_cli.core.taxonomy.readers import _read_table, read_metadata

    try:
        meta = read_metadata(path)
    except SchemaError:
        # not metadata (e.g. an eval report): still say what the table holds
        table = _read_table(path)
        rep = Report("table", f"{path.name}: table")
        rep.add("table", "rows", table.num_rows)
        rep.add("table", "columns", ", ".join(table.column_names))
        rep.document = {"rows": table.num_rows, "columns": table.column_names}
        return rep
    bank = LabelBank.from_taxa(meta.taxa())
    rep = Report("metadata", f"{path.name}: {meta.schema} metadata")
    rep.add("table", "schema", meta.schema)
    rep.add("table", "rows", len(meta))
    rep.add("table", "columns", ", ".join(meta.columns))
    if meta.missing_ranks:
        rep.add("table", "missing ranks", ", ".join(meta.missing_ranks))
    for rank in RANKS:
        rep.add("taxa", rank.value, len(bank.classes(rank)))
    rep.add("taxa", "rows without a species", bank.skipped_rows)
    rep.document = {
        "schema": meta.schema,
        "rows": len(meta),
        "taxa": {r.value: len(bank.classes(r)) for r in RANKS},
    }
    return rep
