"""The learners of `rlxf nash` and their papers, apart from the loop so the CLI can list them cheaply
(their losses: rlxf.losses.nash; their exact tabular steps: rlxf.games)."""

LEARNERS = {
    "online_dpo": "Guo et al., Direct Language Model Alignment from Online AI Feedback, 2024",
    "online_ipo": "Calandriello et al., Human Alignment of LLMs through Online Preference Optimisation, 2024",
    "egpo": "Zhou et al., Extragradient Preference Optimization, 2025",
    "inpo": "Zhang et al., Iterative Nash Policy Optimization, 2024",
    "nash_md": "Munos et al., Nash Learning from Human Feedback, 2023",
    "nash_mp": "Tiapkin et al., Accelerating Nash Learning from Human Feedback via Mirror Prox, 2025",
}
