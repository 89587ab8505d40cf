"""Orchestration below the roles and recipes: ranks and collectives (``distributed``), pools of Ray
actors (``actors``), Ray start-up and Ray-launched training ranks (``ray_ranks``), and weight
broadcast groups (``weight_broadcast``). It knows no recipe and no model class."""
