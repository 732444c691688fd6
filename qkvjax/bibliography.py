"""Every source a claim, metric or report cites, by title.

The four explainers are the public articles whose claims the experiments
test; papers are cited by authors, year and title. A claim names one of
these entries as its source; reports print ``cite(key)``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Source:
  title: str
  authors: str = ""
  year: int | None = None
  venue: str = ""
  kind: str = "paper"  # "explainer", "paper" or "note"

  def cite(self) -> str:
    who = f"{self.authors} " if self.authors else ""
    when = f"({self.year}) " if self.year else ""
    where = f", {self.venue}" if self.venue else ""
    return f"{who}{when}“{self.title}”{where}"


SOURCES: dict[str, Source] = {
    # The explainers whose claims qkvjax tests.
    "division_of_labor": Source(
        "Understanding the Division of Labor Among Q, K, V in Self-Attention Mechanism",
        kind="explainer"),
    "qkv_in_transformers": Source(
        "Understanding Q, K, and V in the Self-Attention Mechanism of Transformers",
        kind="explainer"),
    "qkv_mechanism": Source(
        "The Query-Key-Value (QKV) Mechanism (an untitled explainer; cited by its "
        "opening section, “Introduction: The Query-Key-Value (QKV) mechanism is the "
        "foundation of modern attention systems”)", kind="explainer"),
    "party_guest": Source(
        "QKV in Attention: How Every “Party Guest” Knows What to Ask and What to Share",
        authors="ChatGPT-o3-mini-high (prompted by Ritter Ng)", kind="explainer"),
    # Papers behind metrics and comparison variants.
    "vaswani2017": Source("Attention Is All You Need", "Vaswani et al.", 2017, "NeurIPS"),
    "elhage2021": Source("A Mathematical Framework for Transformer Circuits",
                         "Elhage et al.", 2021, "Transformer Circuits Thread"),
    "olsson2022": Source("In-context Learning and Induction Heads", "Olsson et al.", 2022,
                         "Transformer Circuits Thread"),
    "bietti2023": Source("Birth of a Transformer: A Memory Viewpoint", "Bietti et al.", 2023,
                         "NeurIPS"),
    "kornblith2019": Source("Similarity of Neural Network Representations Revisited",
                            "Kornblith et al.", 2019, "ICML"),
    "roy2007": Source("The effective rank: A measure of effective dimensionality",
                      "Roy & Vetterli", 2007, "EUSIPCO"),
    "dong2021": Source("Attention is Not All You Need: Pure Attention Loses Rank Doubly "
                       "Exponentially with Depth", "Dong, Cordonnier & Loukas", 2021, "ICML"),
    "noci2022": Source("Signal Propagation in Transformers: Theoretical Perspectives and "
                       "the Role of Rank Collapse", "Noci et al.", 2022, "NeurIPS"),
    "dehghani2023": Source("Scaling Vision Transformers to 22 Billion Parameters",
                           "Dehghani et al.", 2023, "ICML"),
    "chizat2019": Source("On Lazy Training in Differentiable Programming",
                         "Chizat, Oyallon & Bach", 2019, "NeurIPS"),
    "hesterberg2015": Source("What Teachers Should Know About the Bootstrap: Resampling in "
                             "the Undergraduate Statistics Curriculum", "Hesterberg", 2015,
                             "The American Statistician"),
    "holm1979": Source("A Simple Sequentially Rejective Multiple Test Procedure", "Holm",
                       1979, "Scandinavian Journal of Statistics"),
    "saponati2025": Source("The underlying structures of self-attention: symmetry, "
                           "directionality, and emergent dynamics in Transformer training",
                           "Saponati et al.", 2025),
    # Not an explainer's claim: a consequence or a control qkvjax adds.
    "qkvjax": Source("a prediction or control added by qkvjax (not an explainer claim)",
                     kind="note"),
}


def cite(key: str) -> str:
  """The citation of ``SOURCES[key]``."""
  return SOURCES[key].cite()


def explainers() -> list[str]:
  return [k for k, s in SOURCES.items() if s.kind == "explainer"]
