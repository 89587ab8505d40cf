"""gold and repeated items mixed into queues; active ordering by reward-model uncertainty

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("ordering", sa.String(length=8), server_default="random", nullable=False))
        batch.add_column(sa.Column("gold_rate", sa.Float(), server_default="0", nullable=False))
        batch.add_column(sa.Column("repeat_rate", sa.Float(), server_default="0", nullable=False))
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("priority", sa.Float(), nullable=True))
        batch.add_column(sa.Column("model_preference", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("model_preference")
        batch.drop_column("priority")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("repeat_rate")
        batch.drop_column("gold_rate")
        batch.drop_column("ordering")
