"""alembic's entry: migrate the engine handed over by rlxf.feedback.migrate."""

from alembic import context

from rlxf.feedback.store import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
