"""EncodeQueue: encode jobs waiting for the vision tower, handed out under a per-turn image budget.

Jobs are served in arrival order. A turn takes at most `max_images` images: a job's images are
split across turns in order, and a turn with budget left goes on to the next job. Each job
gathers the embeddings of its pieces until its last piece is done (one EncodeDone per job).

    budget 2, job A with 5 images, then job B with 1:
      turn 1:  A [a1 a2]
      turn 2:  A [a3 a4]
      turn 3:  A [a5] -> A done,  B [b1] -> B done

Pure Python: the StageRunner encodes the pieces and reports the finished jobs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from workers.contract.messages import EncodeJob, ImageInput
from workers.engine_messages import ImageEmbedding

# Images per turn of a worker with no TPOT target: in practice a whole job per turn, as before
# budgets existed, while a video's hundreds of frames still let decode steps in between.
DEFAULT_MAX_ENCODE_IMAGES = 64


@dataclass
class EncodeProgress:
    """One job, partly encoded."""

    job: EncodeJob
    arrival: float  # when it reached the worker (clock seconds)
    embeddings: list[ImageEmbedding] = field(default_factory=list)  # done so far, in order
    compute_ms: float = 0.0  # summed time of its pieces
    started: float | None = None  # start of its first piece (clock seconds)
    num_taken: int = 0  # images handed out in pieces

    @property
    def num_images_left(self) -> int:
        """Images not encoded yet."""
        return len(self.job.images) - len(self.embeddings)

    @property
    def is_done(self) -> bool:
        return self.num_images_left == 0

    @property
    def queue_ms(self) -> float:
        """Arrival -> the start of its first piece."""
        return (self.started - self.arrival) * 1e3 if self.started is not None else 0.0

    def record(self, start: float, embeddings: list[ImageEmbedding], compute_ms: float) -> None:
        """A piece that started at `start` (clock seconds) is done."""
        if self.started is None:
            self.started = start
        self.embeddings += embeddings
        self.compute_ms += compute_ms


@dataclass(frozen=True)
class EncodePiece:
    progress: EncodeProgress
    images: list[ImageInput]  # the next images of the job, in order


class EncodeQueue:
    def __init__(self) -> None:
        self._jobs: deque[EncodeProgress] = deque()

    def append(self, job: EncodeJob, arrival: float) -> None:
        self._jobs.append(EncodeProgress(job, arrival))

    def take(self, max_images: int) -> list[EncodePiece]:
        """This turn's pieces, at most `max_images` images in all (a job without images is a
        piece of none). Each piece must be encoded, or its job removed, before the next take."""
        pieces: list[EncodePiece] = []
        budget = max_images
        for progress in self._jobs:
            if budget <= 0:
                break
            num_images = min(budget, len(progress.job.images) - progress.num_taken)
            start = progress.num_taken
            pieces.append(EncodePiece(progress, progress.job.images[start : start + num_images]))
            progress.num_taken += num_images
            budget -= num_images
        return pieces

    def remove(self, progress: EncodeProgress) -> None:
        """A job leaves: done, or failed."""
        self._jobs.remove(progress)

    def abort(self, request_id: str) -> None:
        """Drop the job, partly encoded or not (what it put in the embedding cache stays)."""
        self._jobs = deque(p for p in self._jobs if p.job.request_id != request_id)

    @property
    def num_images_queued(self) -> int:
        return sum(progress.num_images_left for progress in self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)
