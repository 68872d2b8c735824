"""Setting profile keys in a config file's text: the values change, nothing else does."""

from __future__ import annotations

import pytest
import yaml

from gateway.cli.profile_yaml import set_profile
from gateway.errors import ConfigError

FIGURES = {"prefill_tokens_per_s": 412.34, "decode_tokens_per_s": 98.76}


def _profile(text: str, index: int = 0) -> dict[str, float]:
    profile: dict[str, float] = yaml.safe_load(text)["backends"][index]["profile"]
    return profile


def test_replaces_existing_keys_in_a_block_profile() -> None:
    text = (
        "backends:\n"
        "  - id: cpu  # the box\n"
        "    type: llamacpp\n"
        "    profile:\n"
        "      prefill_tokens_per_s: 325   # guessed\n"
        "      decode_tokens_per_s: 125\n"
        "      watts_active: 6\n"
        "groups: {auto: [cpu]}\n"
    )
    out = set_profile(text, 0, FIGURES, "f.yaml")
    assert out == text.replace("325   #", "412.3   #").replace(": 125\n", ": 98.8\n")


def test_adds_missing_keys_beside_their_siblings() -> None:
    text = "backends:\n  - id: cpu\n    profile:\n      watts_active: 6\n  - id: b\n"
    out = set_profile(text, 0, FIGURES, "f.yaml")
    assert out == (
        "backends:\n  - id: cpu\n    profile:\n      watts_active: 6\n"
        "      prefill_tokens_per_s: 412.3\n      decode_tokens_per_s: 98.8\n  - id: b\n"
    )


def test_flow_profile_and_flow_backend() -> None:
    text = (
        "backends:\n"
        "  - {id: a, type: deterministic}\n"
        "  - id: cpu\n"
        "    profile: {watts_active: 6, decode_tokens_per_s: 1}\n"
    )
    out = set_profile(text, 1, FIGURES, "f.yaml")
    assert _profile(out, 1) == {
        "watts_active": 6,
        "decode_tokens_per_s": 98.8,
        "prefill_tokens_per_s": 412.3,
    }
    out = set_profile(out, 0, FIGURES, "f.yaml")
    assert out.splitlines()[1] == (
        "  - {id: a, type: deterministic, profile: {prefill_tokens_per_s: 412.3, "
        "decode_tokens_per_s: 98.8}}"
    )


def test_a_backend_without_profile_gets_one() -> None:
    text = "backends:\n  - id: cpu\n    type: llamacpp  # here\ngroups:\n  auto: [cpu]"
    out = set_profile(text, 0, FIGURES, "f.yaml")
    assert out == (
        "backends:\n  - id: cpu\n    type: llamacpp  # here\n"
        "    profile: {prefill_tokens_per_s: 412.3, decode_tokens_per_s: 98.8}\n"
        "groups:\n  auto: [cpu]"
    )
    last = set_profile("backends:\n  - id: cpu", 0, FIGURES, "f.yaml")
    assert _profile(last) == {"prefill_tokens_per_s": 412.3, "decode_tokens_per_s": 98.8}


def test_errors_name_the_file_and_key() -> None:
    with pytest.raises(ConfigError, match="backends") as info:
        set_profile("backends:\n  - id: cpu\n", 3, FIGURES, "f.yaml")
    assert info.value.file == "f.yaml"
    with pytest.raises(ConfigError) as bad:
        set_profile("backends:\n  - id: cpu\n    profile: [1]\n", 0, FIGURES, "f.yaml")
    assert bad.value.key == "backends[0].profile"
