"""The small-scale reproduction study of the paper's claims: ``nalaformer reproduce [--quick]``.

Python API: :func:`run_study` (run or resume a study folder), :func:`study_plan` (what each mode runs),
:func:`collect_results` / :func:`write_report` (rebuild ``results.json`` and ``report.md`` from the folder).
"""

from nalaformer.reproduce.plan import MODES, StudyPlan, TaskPlan, study_plan
from nalaformer.reproduce.report import collect_results, write_report
from nalaformer.reproduce.study import run_study

__all__ = ["MODES", "StudyPlan", "TaskPlan", "collect_results", "run_study", "study_plan", "write_report"]
