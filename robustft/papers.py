"""The papers of the built-in schemes, as ``robustft export``'s model card cites them (docs/schemes.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Paper:
    """A scheme's paper: the sentence the model card cites and its BibTeX entry."""

    citation: str
    bibtex: str


#: The E-AT paper: the ``e-at`` scheme's, and that of the ``e-at`` evaluation protocol.
EAT = Paper(
    'Croce & Hein, "Adversarial Robustness against Multiple and Single lp-Threat Models via Quick Fine-Tuning of '
    'Robust Classifiers", ICML 2022',
    "@inproceedings{croce2022eat,\n  title     = {Adversarial Robustness against Multiple and Single $l_p$-Threat Models via Quick"
    " Fine-Tuning of Robust Classifiers},\n  author    = {Croce, Francesco and Hein, Matthias},\n"
    "  booktitle = {International Conference on Machine Learning (ICML)},\n  year      = {2022}\n}",
)
_RAMP = Paper(
    'Jiang & Singh, "RAMP: Boosting Adversarial Robustness Against Multiple lp Perturbations for Universal Robustness", NeurIPS 2024',
    "@inproceedings{jiang2024ramp,\n  title     = {{RAMP}: Boosting Adversarial Robustness Against Multiple $l_p$ Perturbations"
    " for Universal Robustness},\n  author    = {Jiang, Enyi and Singh, Gagandeep},\n"
    "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n  year      = {2024}\n}",
)
_MADRY = Paper(
    'Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018',
    "@inproceedings{madry2018towards,\n  title     = {Towards Deep Learning Models Resistant to Adversarial Attacks},\n"
    "  author    = {Madry, Aleksander and Makelov, Aleksandar and Schmidt, Ludwig and Tsipras, Dimitris and Vladu, Adrian},\n"
    "  booktitle = {International Conference on Learning Representations (ICLR)},\n  year      = {2018}\n}",
)
_TRAMER = Paper(
    'Tramer & Boneh, "Adversarial Training and Robustness for Multiple Perturbations", NeurIPS 2019',
    "@inproceedings{tramer2019multiple,\n  title     = {Adversarial Training and Robustness for Multiple Perturbations},\n"
    "  author    = {Tram{\\`e}r, Florian and Boneh, Dan},\n"
    "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n  year      = {2019}\n}",
)
#: The papers of the built-in schemes (docs/schemes.md); a third-party scheme may set a ``paper`` attribute
#: (one sentence) on its class, which the model card then cites.
PAPERS: dict[str, Paper] = {
    "e-at": EAT,
    "e-at-uniform": EAT,
    "ramp": _RAMP,
    "lp-at": _MADRY,
    "linf-at": _MADRY,
    "l2-at": _MADRY,
    "l1-at": _MADRY,
    "sat": Paper(
        'Madaan, Shin & Hwang, "Learning to Generate Noise for Multi-Attack Robustness", ICML 2021',
        "@inproceedings{madaan2021learning,\n  title     = {Learning to Generate Noise for Multi-Attack Robustness},\n"
        "  author    = {Madaan, Divyam and Shin, Jinwoo and Hwang, Sung Ju},\n"
        "  booktitle = {International Conference on Machine Learning (ICML)},\n  year      = {2021}\n}",
    ),
    "avg": _TRAMER,
    "max": _TRAMER,
    "msd": Paper(
        'Maini, Wong & Kolter, "Adversarial Robustness Against the Union of Multiple Perturbation Models", ICML 2020',
        "@inproceedings{maini2020adversarial,\n  title     = {Adversarial Robustness Against the Union of Multiple Perturbation Models},\n"
        "  author    = {Maini, Pratyush and Wong, Eric and Kolter, J. Zico},\n"
        "  booktitle = {International Conference on Machine Learning (ICML)},\n  year      = {2020}\n}",
    ),
}


def scheme_paper(scheme: str, scheme_cls: Any = None) -> Paper | None:
    """The paper of ``scheme``: the built-in table, else the class's ``paper`` attribute, else None."""
    if scheme in PAPERS:
        return PAPERS[scheme]
    text = str(getattr(scheme_cls, "paper", "") or "").strip()
    return Paper(text, "") if text else None
