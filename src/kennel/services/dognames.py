"""Random dog-themed titles for workers created without one (spec §3.1)."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "Brave",
    "Curious",
    "Diligent",
    "Eager",
    "Faithful",
    "Gentle",
    "Happy",
    "Clever",
    "Loyal",
    "Nimble",
    "Patient",
    "Plucky",
    "Quick",
    "Steady",
    "Swift",
    "Tireless",
    "Trusty",
    "Wise",
    "Bright",
    "Bold",
    "Keen",
    "Sunny",
    "Fluffy",
    "Scruffy",
)
_BREEDS = (
    "Beagle",
    "Border Collie",
    "Boxer",
    "Corgi",
    "Dachshund",
    "Dalmatian",
    "Greyhound",
    "Husky",
    "Labrador",
    "Mastiff",
    "Poodle",
    "Pug",
    "Retriever",
    "Samoyed",
    "Schnauzer",
    "Setter",
    "Shepherd",
    "Spaniel",
    "Terrier",
    "Whippet",
    "Basset Hound",
    "Bloodhound",
    "Sheepdog",
    "Shiba Inu",
)


def dog_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)} {secrets.choice(_BREEDS)}"
