"""Ranks, lineage records, species keys, captions, metadata readers and label banks."""

from __future__ import annotations

import pytest

from biotrove_cli.core.errors import SchemaError, UsageError
from biotrove_cli.core.taxonomy.captions import TEXT_TYPES, build_caption, caption_body
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon, clean_name
from biotrove_cli.core.taxonomy.rank import RANKS, Rank
from biotrove_cli.core.taxonomy.readers import read_metadata

AGELENA = Taxon.from_parts(
    "Animalia",
    "Arthropoda",
    "Arachnida",
    "Araneae",
    "Agelenidae",
    "Agelena",
    "labyrinthica",
    scientific_name="Agelena labyrinthica",
    common_name="Labyrinth spider",
)


# -- ranks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,rank",
    [
        ("Species", Rank.SPECIES),
        ("genus", Rank.GENUS),
        (" KINGDOM ", Rank.KINGDOM),
        ("cls", Rank.CLASS),
        ("class", Rank.CLASS),
    ],
)
def test_rank_parses_user_text(text, rank):
    assert Rank.parse(text) is rank


def test_rank_order_and_bad_text():
    assert list(RANKS) == [
        Rank.KINGDOM,
        Rank.PHYLUM,
        Rank.CLASS,
        Rank.ORDER,
        Rank.FAMILY,
        Rank.GENUS,
        Rank.SPECIES,
    ]
    assert Rank.KINGDOM < Rank.SPECIES and Rank.GENUS > Rank.FAMILY
    with pytest.raises(UsageError) as err:
        Rank.parse("subspecies")
    assert err.value.exit_code == 2 and "kingdom" in err.value.hint
    assert Rank.parse_list("species,genus,Genus") == [Rank.GENUS, Rank.SPECIES]
    assert Rank.parse_list("all") == list(RANKS)


# -- lineage and species identity ------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,clean",
    [
        (None, ""),
        (float("nan"), ""),
        ("nan", ""),
        ("  ", ""),
        ("NaN", ""),
        (" Steatoda   grossa ", "Steatoda grossa"),
        ("None", ""),
    ],
)
def test_clean_name(raw, clean):
    assert clean_name(raw) == clean


def test_species_key_is_genus_epithet_plus_lineage_case_insensitive():
    a = Taxon.from_parts(
        "Animalia", "Arthropoda", "Insecta", "Hymenoptera", "Vespidae", "Vespula", "vulgaris"
    )
    b = Taxon.from_parts(
        "ANIMALIA ", "arthropoda", "insecta", "hymenoptera", "VESPIDAE", "vespula", " Vulgaris"
    )
    c = Taxon.from_parts(
        "Animalia", "Chordata", "Aves", "Passeriformes", "Sturnidae", "Sturnus", "vulgaris"
    )
    assert a.species_key == b.species_key
    assert a.species_key.endswith("|vespula vulgaris")
    assert a.species_key != c.species_key  # same epithet, other genus: never merged
    assert a.binomial == "Vespula vulgaris" and b.binomial == "vespula Vulgaris"  # as written


def test_trinomials_and_binomial_species_columns_keep_a_species_key():
    sub = Taxon.from_parts(
        "Animalia",
        "Chordata",
        "Mammalia",
        "Carnivora",
        "Canidae",
        "Canis",
        "",
        scientific_name="Canis lupus familiaris",
    )
    assert sub.epithet == "lupus" and sub.species_key.endswith("|canis lupus")
    assert sub.sci == "Canis lupus familiaris"
    full = Taxon.from_parts(
        "Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "Canis", "Canis lupus"
    )
    assert full.epithet == "lupus" and full.species_key == sub.species_key
    no_genus_col = Taxon.from_parts(species="", scientific_name="Quercus alba")
    assert no_genus_col.genus == "Quercus" and no_genus_col.epithet == "alba"


def test_missing_ranks_are_empty_and_keys_stop_there():
    t = Taxon.from_parts("Plantae", "nan", "", "Fagales", "Fagaceae", "Quercus", "alba")
    assert t.name_at(Rank.PHYLUM) == "" and t.key_at(Rank.PHYLUM) == ""
    assert t.key_at(Rank.ORDER) == "plantae|||fagales"
    assert t.deepest_rank() is Rank.SPECIES


# -- captions --------------------------------------------------------------------------------------
EXPECTED = {  # BioTrove's own shards (Arbor-preprocess sample files) for this species
    "com": "a photo of Labyrinth spider.",
    "common_name": "Labyrinth spider.",
    "sci": "a photo of Agelena labyrinthica.",
    "sci_com": "a photo of Agelena labyrinthica with common name Labyrinth spider.",
    "scientific_name": "Agelena labyrinthica.",
    "taxon": "a photo of Animalia Arthropoda Arachnida Araneae Agelenidae Agelena labyrinthica.",
    "taxonTag": "a photo of kingdom Animalia phylum Arthropoda class Arachnida order Araneae "
    "family Agelenidae genus Agelena species labyrinthica.",
    "taxonTag_com": "a photo of kingdom Animalia phylum Arthropoda class Arachnida order Araneae "
    "family Agelenidae genus Agelena species labyrinthica with common name "
    "Labyrinth spider.",
    "taxon_com": "a photo of Animalia Arthropoda Arachnida Araneae Agelenidae Agelena "
    "labyrinthica with common name Labyrinth spider.",
    "taxonomic_name": "Animalia Arthropoda Arachnida Araneae Agelenidae Agelena labyrinthica.",
}


@pytest.mark.parametrize("text_type", TEXT_TYPES)
def test_caption_templates_match_biotrove(text_type):
    assert build_caption(AGELENA, text_type) == EXPECTED[text_type]


def test_captions_fall_back_to_scientific_name_and_drop_empty_ranks():
    t = Taxon.from_parts(
        "Animalia",
        "",
        "Arachnida",
        "nan",
        "Agelenidae",
        "Agelena",
        "labyrinthica",
        common_name="nan",
    )
    assert build_caption(t, "com") == "a photo of Agelena labyrinthica."
    assert (
        build_caption(t, "taxon")
        == "a photo of Animalia Arachnida Agelenidae Agelena labyrinthica."
    )
    assert build_caption(t, "taxonTag") == (
        "a photo of kingdom Animalia class Arachnida family "
        "Agelenidae genus Agelena species labyrinthica."
    )
    assert "nan" not in " ".join(build_caption(t, tt) for tt in TEXT_TYPES)
    assert "  " not in " ".join(build_caption(t, tt) for tt in TEXT_TYPES)


def test_caption_bodies_cut_at_higher_ranks():
    assert caption_body(AGELENA, "taxon", Rank.CLASS) == "Animalia Arthropoda Arachnida"
    assert caption_body(AGELENA, "taxonTag", Rank.PHYLUM) == "kingdom Animalia phylum Arthropoda"
    assert caption_body(AGELENA, "sci", Rank.GENUS) == "Agelena"
    assert caption_body(AGELENA, "com", Rank.FAMILY) == "Agelenidae"
    with pytest.raises(UsageError):
        build_caption(AGELENA, "taxonomy")


# -- readers ---------------------------------------------------------------------------------------
def test_reads_the_real_arboretum_parquet(arboretum):
    meta = read_metadata(arboretum)
    assert meta.schema == "biotrove" and len(meta) == 874
    first = meta.records[0]
    assert first.photo_id and first.url.startswith("http")
    assert first.taxon.binomial == "Steatoda grossa" and first.taxon.epithet == "grossa"
    bank = LabelBank.from_taxa(meta.taxa())
    assert len(bank) == 214 and len(bank.classes(Rank.CLASS)) == 1


def test_reads_the_real_inat2021_table(inat2021):
    meta = read_metadata(inat2021)
    assert meta.schema == "inat2021" and len(meta) == 10000
    bank = LabelBank.from_taxa(meta.taxa())
    assert len(bank) == 10000  # 10,000 species, none merged by shared epithets
    epithets = {t.epithet for t in bank.taxa}
    assert len(epithets) < 10000  # epithets DO repeat across genera
    assert {t.kingdom for t in bank.taxa} == {"Animalia", "Plantae", "Fungi"}


def test_reads_lifestages_as_generic_with_paths(lifestages):
    meta = read_metadata(lifestages, extra_columns=("life_stages",))
    assert meta.schema == "generic" and len(meta) == 600
    assert meta.records[0].path.startswith("/lifestages/")
    assert meta.records[0].extra["life_stages"] in {"Adult", "Egg", "Larva", "Pupa"}


def test_missing_columns_are_named(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(
        "photo_id,scientificName,kingdom,genus,species,common_name\n1,A b,Animalia,A,b,x\n"
    )
    with pytest.raises(SchemaError) as err:
        read_metadata(p)
    msg = err.value.message
    assert "biotrove schema" in msg and "phylum" in msg and "family" in msg
    q = tmp_path / "q.csv"
    q.write_text("foo,bar\n1,2\n")
    with pytest.raises(SchemaError) as err:
        read_metadata(q)
    assert "no species columns" in err.value.message and "foo, bar" in err.value.hint


def test_generic_csv_with_cls_and_dirty_cells(tmp_path):
    p = tmp_path / "rare.csv"
    p.write_text(
        "kingdom,phylum,cls,order,family,genus,species,common_name,path\n"
        " Animalia ,Mollusca,Bivalvia,Unionida,Unionidae,Cyclonaias,tuberculata,nan,a.jpg\n"
        "Animalia,Mollusca,Bivalvia,Unionida,Unionidae,Cyclonaias,,,b.jpg\n"
    )
    meta = read_metadata(p)
    assert meta.schema == "generic"
    t0, t1 = meta.records[0].taxon, meta.records[1].taxon
    assert t0.names[2] == "Bivalvia" and t0.kingdom == "Animalia" and t0.common_name == ""
    assert t0.binomial == "Cyclonaias tuberculata"
    assert t1.species_key == "" and t1.key_at(Rank.GENUS).endswith("|cyclonaias")
    bank = LabelBank.from_taxa(meta.taxa())
    assert len(bank) == 1 and bank.skipped_rows == 1


def test_unreadable_and_unknown_files(tmp_path):
    from biotrove_cli.core.errors import InputError

    with pytest.raises(InputError):
        read_metadata(tmp_path / "nope.parquet")
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError) as err:
        read_metadata(bad)
    assert "cannot read" in err.value.message


# -- label banks -----------------------------------------------------------------------------------
def test_repeated_epithets_stay_apart_and_roll_up(demo_bank):
    vulgaris = [t for t in demo_bank.taxa if t.epithet == "vulgaris"]
    assert len(vulgaris) == 4
    species = demo_bank.classes(Rank.SPECIES)
    genus = demo_bank.classes(Rank.GENUS)
    assert len(species) == len(demo_bank) == 33
    idx = [species.keys.index(t.species_key) for t in vulgaris]
    assert len(set(idx)) == 4
    # every species maps to the class of its own genus
    for i, t in enumerate(demo_bank.taxa):
        assert genus.keys[genus.species_to_class[i]] == t.key_at(Rank.GENUS)


def test_match_by_key_then_by_unambiguous_name(demo_bank):
    t = next(t for t in demo_bank.taxa if t.binomial == "Quercus alba")
    assert demo_bank.match(t, Rank.SPECIES) == demo_bank.classes(Rank.SPECIES).keys.index(
        t.species_key
    )
    # same species with a differently spelled higher lineage still matches by binomial
    other = Taxon.from_parts("Plantae", "Magnoliophyta", "", "", "", "Quercus", "alba")
    assert demo_bank.match(other, Rank.SPECIES) == demo_bank.match(t, Rank.SPECIES)
    unknown = Taxon.from_parts("Plantae", "", "", "", "", "Quercus", "robur")
    assert demo_bank.match(unknown, Rank.SPECIES) == -1
    assert demo_bank.match(unknown, Rank.GENUS) == demo_bank.match(t, Rank.GENUS)


def test_bank_save_load_within_restrict_custom(tmp_path, demo_bank):
    from biotrove_cli.core.errors import InputError

    bank = LabelBank(
        taxa=list(demo_bank.taxa), counts={demo_bank.taxa[0].species_key: {"train": 3}}
    )
    path = bank.save(tmp_path / "labels.parquet")
    back = LabelBank.load(path)
    assert [t.species_key for t in back.taxa] == [t.species_key for t in demo_bank.taxa]
    assert back.counts[demo_bank.taxa[0].species_key]["train"] == 3
    assert LabelBank.load(tmp_path).taxa == back.taxa  # a folder holding the bank
    aves = demo_bank.within("aves")
    assert {t.names[2] for t in aves.taxa} == {"Aves"}
    with pytest.raises(InputError):
        demo_bank.within("Cetacea")
    checklist = tmp_path / "checklist.txt"
    checklist.write_text("# my park\nQuercus alba\nPinus banksiana\n\n")
    custom = LabelBank.load(checklist)
    assert custom.is_custom and custom.custom_labels == ["Quercus alba", "Pinus banksiana"]
    sub = demo_bank.restrict(custom)
    assert sorted(t.binomial for t in sub.taxa) == ["Pinus banksiana", "Quercus alba"]
    with pytest.raises(UsageError):
        custom.classes(Rank.GENUS)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError):
        LabelBank.load(empty)


def test_compressed_csv_reads_like_the_plain_file(tmp_path, lifestages):
    import gzip

    plain = read_metadata(lifestages)
    packed = tmp_path / "lifestages.csv.gz"
    packed.write_bytes(gzip.compress(lifestages.read_bytes()))
    again = read_metadata(packed)
    assert [r.taxon for r in again.records] == [r.taxon for r in plain.records]
    assert [r.path for r in again.records] == [r.path for r in plain.records]
    from biotrove_cli.core.errors import InputError

    odd = tmp_path / "x.parquet.gz"
    odd.write_bytes(b"x")
    with pytest.raises(InputError) as err:
        read_metadata(odd)
    assert "gzip" in err.value.hint
