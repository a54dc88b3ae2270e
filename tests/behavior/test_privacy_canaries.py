"""The canary families of the privacy-backdoor probe: deterministic, offline, within the length
small models see whole, each secret a real span of its text, check digits right (published
examples as the oracle)."""

from __future__ import annotations

import random
import re
from collections import Counter

from hfguard.behavior import canaries as C
from hfguard.behavior.membership import canaries, read_probe_data, secret_exposure


def test_every_family_is_deterministic_and_well_formed():
    for name in C.FAMILIES:
        a, b = C.family(name, 200, seed=3), C.family(name, 200, seed=3)
        assert a == b and a != C.family(name, 200, seed=4)
        assert len({c.text for c in a}) > 190  # varied, not a handful of sentences
        for c in a:
            assert c.family == name and len(c.text) <= C.MAX_CHARS
            assert c.secret and c.secret in c.text


def test_default_probe_is_an_even_interleaved_mixture():
    items = canaries(128, seed=0)
    counts = Counter(c.family for c in items)
    assert set(counts) == set(C.FAMILIES) and max(counts.values()) - min(counts.values()) <= 1
    assert [c.family for c in items[:7]] == list(C.FAMILIES)
    assert items == canaries(128, seed=0)


def test_check_digits_match_published_examples():
    assert C.luhn_valid("4111 1111 1111 1111") and C.luhn_valid("79927398713")
    assert not C.luhn_valid("79927398710")
    assert C.verhoeff_digit("236") == "3" and C.verhoeff_valid("2363")   # Verhoeff's worked example
    assert C.icao_digit("L898902C3") == "6"                                # ICAO 9303 specimen passport
    assert C.iso7064_digit("8609574271") == "9"                            # Steuer-IdNr 86095742719
    assert C.cpf_digits("529982247") == "25"                               # CPF 529.982.247-25
    assert C.nir_key("2550814168025") == "38"                              # NIR 2 55 08 14 168 025 38


def test_generated_ids_and_cards_carry_valid_check_digits():
    brands = Counter()
    for c in C.family("payment-card", 300, seed=1):
        assert C.luhn_valid(c.secret), c.text
        brands[c.text.split(" ")[0]] += 1
    assert len(brands) >= 4
    kinds = Counter()
    for c in C.family("gov-id", 400, seed=1):
        digits = re.sub(r"\D", "", c.secret)
        if c.text.startswith("Aadhaar"):
            kinds["aadhaar"] += C.verhoeff_valid(digits)
        elif c.text.startswith("CPF"):
            kinds["cpf"] += C.cpf_digits(digits[:9]) == digits[9:]
        elif c.text.startswith("Steuer"):
            kinds["steuer"] += C.iso7064_digit(digits[:10]) == digits[10]
        elif c.text.startswith("Passport"):
            kinds["passport"] += C.icao_digit(c.secret[:9]) == c.secret[9]
        elif c.text.startswith("numero"):
            kinds["nir"] += C.nir_key(digits[:13]) == digits[13:]
        else:
            kinds["other"] += 1
    assert min(kinds.values()) > 20 and len(kinds) == 6, kinds


def test_alternatives_keep_the_format_and_probe_data_has_no_secret(tmp_path):
    rng = random.Random(0)
    for secret in ("4111 1111 1111 1111", "AKIAABCDEF0123456789", "AB 12 34 56 C", "ghp_aZ09"):
        alt = C.alternative(secret, rng)
        assert alt != secret and len(alt) == len(secret)
        for x, y in zip(secret, alt, strict=True):
            assert (x.isdigit(), x.isupper(), x.islower()) == (y.isdigit(), y.isupper(), y.islower())
            assert x.isalnum() or x == y
    data = tmp_path / "probe.txt"
    data.write_text("first line\n\nsecond line\n", encoding="utf-8")
    items = read_probe_data(str(data))
    assert [(c.text, c.secret, c.family) for c in items] == [("first line", None, "probe-data"),
                                                              ("second line", None, "probe-data")]
    assert secret_exposure(None, None, items) == []  # nothing to rank, the model is never called
