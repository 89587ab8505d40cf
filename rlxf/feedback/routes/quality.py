"""The quality page of a project (admins only) and its plot of each labeler's measures."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from rlxf.feedback.quality import quality_report
from rlxf.feedback.routes.dependencies import Administrator, Database, ProjectId, page, project_of

LABELER_MEASURES = ("gold_accuracy", "consistency", "mean_kappa")

router = APIRouter()


@router.get("/admin/projects/{project_id}/quality", response_class=HTMLResponse)
def quality_page(request: Request, project_id: ProjectId, user: Administrator, session: Database):
    project = project_of(session, user, project_id)
    return page(request, "quality.html", user=user, project=project, report=quality_report(session, project))


@router.get("/admin/projects/{project_id}/quality.png")
def quality_plot(project_id: ProjectId, user: Administrator, session: Database):
    project = project_of(session, user, project_id)
    return Response(labeler_plot(quality_report(session, project)), media_type="image/png")


def labeler_plot(report: dict) -> bytes:
    """Bars per labeler: gold accuracy, self-consistency and mean kappa with the others."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(report["labelers"])
    figure, axes = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.2))
    width = 0.8 / len(LABELER_MEASURES)
    for index, measure in enumerate(LABELER_MEASURES):
        values = [report["labelers"][n][measure] for n in names]
        axes.bar(
            [i + index * width for i in range(len(names))],
            [v if v is not None else 0 for v in values],
            width,
            label=measure.replace("_", " "),
        )
    axes.set_xticks([i + width for i in range(len(names))], names)
    axes.set_ylim(-0.2, 1.05)
    axes.axhline(0, color="#888", linewidth=0.8)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
