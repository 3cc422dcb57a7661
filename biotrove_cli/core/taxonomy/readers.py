"""Readers that turn real metadata (Parquet/CSV/TSV) into lineage records.

Three schemas are recognised and named to the user:

* ``biotrove``: the BioTrove/Arboretum schema (photo_id, scientificName, kingdom, phylum, class,
  order, family, genus, species [epithet], common_name, photo_url);
* ``inat2021``: the iNat2021 categories table (name, common_name, kingdom..genus,
  specific_epithet);
* ``generic``: any table with lineage columns (``cls`` is accepted for ``class``), an optional
  scientific name, common name, image path and photo id.

Column names match regardless of capitalisation. Cells are cleaned (whitespace, "nan", empty).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from biotrove_cli.core.errors import InputError, SchemaError
from biotrove_cli.core.taxonomy.lineage import Taxon, clean_name

# canonical field -> accepted column names (lower case), first match wins
ALIASES: dict[str, tuple[str, ...]] = {
    "kingdom": ("kingdom",),
    "phylum": ("phylum",),
    # "cls" first: a table with both (BioCLIP's rare species) names the rank "cls" and keeps
    # "class" for the species label
    "class": ("cls", "class_", "class"),
    "order": ("order",),
    "family": ("family",),
    "genus": ("genus",),
    "species": ("species", "specific_epithet", "epithet"),
    "scientific_name": ("scientificname", "scientific_name", "name", "taxon_name"),
    "common_name": ("common_name", "commonname", "vernacularname", "vernacular_name"),
    "photo_id": ("photo_id", "photoid", "image_id"),
    "path": ("path", "file", "filepath", "file_path", "filename", "file_name", "image_path"),
    "url": ("photo_url", "url", "image_url"),
}
LINEAGE_FIELDS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

SCHEMAS: dict[str, tuple[str, ...]] = {
    # schema -> the columns (canonical fields) it must have
    "biotrove": (
        "photo_id",
        "scientific_name",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "species",
        "common_name",
    ),
    "inat2021": (
        "scientific_name",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "species",
    ),
}
#: The column names of a BioTrove/Arboretum metadata file, in file order.
BIOTROVE_COLUMNS = (
    "photo_id",
    "scientificName",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
    "common_name",
    "photo_url",
)
SUPPORTED_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt")
COMPRESSED = (".gz", ".bz2")


@dataclass
class MetadataRecord:
    """One metadata row: its taxon and where its image is."""

    taxon: Taxon
    row: int
    photo_id: str = ""
    path: str = ""
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Metadata:
    """A metadata file read into records."""

    path: Path
    schema: str
    columns: list[str]
    fields: dict[str, str]  # canonical field -> actual column name
    records: list[MetadataRecord]

    @property
    def missing_ranks(self) -> list[str]:
        return [f for f in LINEAGE_FIELDS if f not in self.fields]

    def taxa(self) -> list[Taxon]:
        return [r.taxon for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


def table_suffix(path: Path) -> str:
    """The format suffix of a metadata file: ``.csv`` for ``x.csv`` and ``x.csv.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSED:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    if path.suffix.lower() == ".bz2":
        import bz2

        return bz2.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def _read_table(path: Path):
    """Read a Parquet/CSV/TSV file (CSV/TSV may be .gz/.bz2) into a pyarrow Table with every
    column as string."""
    import pyarrow as pa

    suffix = table_suffix(path)
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            delimiter = "\t" if suffix == ".tsv" else ","
            with _open_text(path) as fh:
                header = next(csv.reader(fh, delimiter=delimiter), None)
            if not header:
                raise InputError(f"{path}: the file is empty (no header row)")
            names = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=False,
                ),
            )
    except InputError:
        raise
    except (OSError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"{path}: cannot read it as {suffix.lstrip('.') or 'a table'} ({exc})",
            hint="metadata must be a Parquet, CSV or TSV file with a header row",
        ) from exc
    columns = []
    for name in table.column_names:
        col = table.column(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            try:
                col = col.cast(pa.string())
            except pa.ArrowException:
                continue  # nested/binary columns are not metadata we read
        columns.append((name, col))
    return pa.table({n: c for n, c in columns})


def resolve_fields(columns: list[str]) -> dict[str, str]:
    """Map canonical fields to the file's actual column names (case-insensitive)."""
    lower = {c.lower().strip(): c for c in columns}
    fields: dict[str, str] = {}
    for canonical, names in ALIASES.items():
        for name in names:
            if name in lower:
                fields[canonical] = lower[name]
                break
    return fields


def detect_schema(
    columns: list[str], source: str = "metadata", require_species: bool = True
) -> tuple[str, dict[str, str]]:
    """Name the schema of a table and map its columns, or explain what is missing.

    Args:
        require_species: fail when no column names the species (eval's ``--label-col`` names
            the classes itself).
    """
    fields = resolve_fields(columns)
    lower = {c.lower() for c in columns}
    if "photo_id" in fields:
        schema = "biotrove"
    elif "specific_epithet" in lower and "name" in lower:
        schema = "inat2021"
    else:
        schema = "generic"
    required = SCHEMAS.get(schema, ())
    missing = [f for f in required if f not in fields]
    if missing:
        pretty = {
            "scientific_name": "scientificName" if schema == "biotrove" else "name",
            "species": "species" if schema == "biotrove" else "specific_epithet",
        }
        names = ", ".join(pretty.get(m, m) for m in missing)
        raise SchemaError(
            f"{source}: looks like the {schema} schema but is missing column(s): {names}",
            hint=f"columns found: {', '.join(columns)}",
        )
    has_species = ("genus" in fields and "species" in fields) or "scientific_name" in fields
    if require_species and not has_species:
        raise SchemaError(
            f"{source}: no species columns: need 'genus' + 'species' (or 'specific_epithet'), "
            "or a scientific name column ('scientificName' or 'name')",
            hint=f"columns found: {', '.join(columns) or '(none)'}; lineage columns are "
            "kingdom, phylum, class (or cls), order, family, genus, species",
        )
    return schema, fields


def read_metadata(
    path: str | Path,
    extra_columns: tuple[str, ...] = (),
    exclude_columns: tuple[str, ...] = (),
    require_species: bool = True,
) -> Metadata:
    """Read one metadata file into records, detecting its schema.

    Args:
        path: a Parquet, CSV or TSV file.
        extra_columns: other columns to keep per record (e.g. ``life_stages``), when present.
        exclude_columns: columns never read as lineage, names or paths (eval's label column).
        require_species: see :func:`detect_schema`.

    Raises:
        InputError: the file is missing or unreadable.
        SchemaError: the columns do not make a schema biotrove knows (the message names them).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file", hint="check the metadata path")
    if path.is_dir():
        raise InputError(
            f"{path}: is a folder, not a metadata file", hint="pass a Parquet or CSV file"
        )
    if table_suffix(path) not in SUPPORTED_SUFFIXES or (
        path.suffix.lower() in COMPRESSED and table_suffix(path) not in (".csv", ".tsv")
    ):
        raise InputError(
            f"{path}: unsupported metadata format {''.join(path.suffixes) or '(no suffix)'}",
            hint="use a .parquet, .csv or .tsv file (CSV/TSV may be gzip- or bz2-compressed)",
        )
    table = _read_table(path)
    columns = list(table.column_names)
    skip = {c.lower() for c in exclude_columns}
    schema, fields = detect_schema(
        [c for c in columns if c.lower() not in skip], str(path), require_species
    )

    def column(canonical: str) -> list[str]:
        name = fields.get(canonical)
        if name is None:
            return [""] * table.num_rows
        return [v if v is not None else "" for v in table.column(name).to_pylist()]

    cols = {f: column(f) for f in ALIASES}
    lower = {c.lower(): c for c in columns}
    extras = {
        e: table.column(lower[e.lower()]).to_pylist() for e in extra_columns if e.lower() in lower
    }
    records: list[MetadataRecord] = []
    for i in range(table.num_rows):
        taxon = Taxon.from_parts(
            cols["kingdom"][i],
            cols["phylum"][i],
            cols["class"][i],
            cols["order"][i],
            cols["family"][i],
            cols["genus"][i],
            cols["species"][i],
            scientific_name=cols["scientific_name"][i],
            common_name=cols["common_name"][i],
        )
        records.append(
            MetadataRecord(
                taxon=taxon,
                row=i,
                photo_id=clean_name(cols["photo_id"][i]),
                path=str(cols["path"][i] or "").strip(),
                url=str(cols["url"][i] or "").strip(),
                extra={k: clean_name(v[i]) for k, v in extras.items()},
            )
        )
    return Metadata(path=path, schema=schema, columns=columns, fields=fields, records=records)
