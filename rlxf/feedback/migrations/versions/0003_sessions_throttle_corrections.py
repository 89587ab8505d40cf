"""server-side session revocation, login throttling in the store, one correction per answer

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    forked = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT supersedes FROM answers WHERE supersedes IS NOT NULL GROUP BY supersedes HAVING COUNT(*) > 1"
            )
        )
        .scalars()
        .all()
    )
    if forked:
        raise RuntimeError(
            f"answers {sorted(forked)} are each superseded by more than one correction; keep one correction of each "
            "(delete the others) before upgrading this store"
        )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("answers") as batch:
        batch.create_unique_constraint("one_correction_per_answer", ["supersedes"])
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=320), nullable=False, index=True),
        sa.Column("at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("login_attempts")
    with op.batch_alter_table("answers") as batch:
        batch.drop_constraint("one_correction_per_answer", type_="unique")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_generation")
