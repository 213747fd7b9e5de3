"""Retrieval recall with tied candidates, on hand-built score matrices, both directions."""
import pytest
import torch

from bench import streams
from bench.evaluate import Evaluator, _counts, recall_at, recall_both
from bench.heads import Heads
from bench.runner import get_scenario


def brute_force(scores, k, rounds=4000, seed=0):
    """Recall@k averaged over random tie-breaking: candidates sorted by score, ties in a random order."""
    gen = torch.Generator().manual_seed(seed)
    n = scores.shape[1]
    hits = 0.0
    for _ in range(rounds):
        jitter = torch.rand(n, generator=gen, dtype=torch.float64) / 2     # integer scores: only ties reorder
        order = (scores.double() + jitter).argsort(1, descending=True)
        rank = (order == torch.arange(len(scores)).unsqueeze(1)).float().argmax(1)
        hits += (rank < k).float().mean().item()
    return hits / rounds


def test_a_tie_with_the_ground_truth_counts_as_its_expected_value():
    s = torch.tensor([[5., 5., 5., 1.],     # ground truth tied with 2 others at the top: R@1 = 1/3, R@3 = 1
                      [1., 3., 4., 3.],     # one above, one tied: R@1 = 0, R@2 = 1/2, R@3 = 1
                      [0., 0., 2., 0.],     # alone at the top
                      [9., 9., 9., 9.]])    # everything tied: R@k = k/4
    r1, r2, r3 = recall_at(s, ks=(1, 2, 3)).tolist()
    assert r1 == pytest.approx((1 / 3 + 0 + 1 + 1 / 4) / 4)
    assert r2 == pytest.approx((2 / 3 + 1 / 2 + 1 + 2 / 4) / 4)
    assert r3 == pytest.approx((1 + 1 + 1 + 3 / 4) / 4)


def test_class_name_texts_both_directions():
    # Audio clips of 3 classes, 2 clips each; each clip's text is its class name, so texts repeat.
    za = torch.tensor([[1., 0.], [.9, .1], [0., 1.], [.1, .9], [-1., 0.], [-.9, -.1]])
    zb = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.], [-1., 0.], [-1., 0.]])
    s = za @ zb.T
    # audio -> text: every clip scores its two identical class texts equally and above the others
    assert recall_at(s, ks=(1, 2)).tolist() == pytest.approx([0.5, 1.0])
    # text -> audio: each text prefers one clip of its class: a clip that is the nearer one (1.0 vs 0.9) wins
    r1_ba, r2_ba = recall_at(s.T, ks=(1, 2)).tolist()
    assert r1_ba == pytest.approx(0.5) and r2_ba == pytest.approx(1.0)
    # a rule that ignored ties would give audio -> text R@1 = 1
    assert recall_at(s, ks=(1,))[0] < 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_matches_random_tie_breaking(seed):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 4, (12, 12), generator=gen).float()     # few values: many ties
    exact = recall_at(s, ks=(1, 3, 6)).tolist()
    for k, value in zip((1, 3, 6), exact):
        assert value == pytest.approx(brute_force(s, k), abs=0.01)


def test_without_ties_it_is_the_plain_rank():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(50, 50, generator=gen)
    rank = (s > s.diagonal().unsqueeze(1)).sum(1)
    assert recall_at(s).tolist() == pytest.approx([(rank < k).float().mean().item() for k in (1, 5, 10)])


@pytest.mark.parametrize("seed", range(3))
def test_counts_equal_the_comparisons_both_ways(seed):
    """The counts from signs are the counts of ``>`` and ``==`` against the diagonal, per row and per column,
    with many ties and a NaN score (below everything, as a comparison has it)."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 5, (40, 40), generator=gen).float()
    s[3, 7] = s[11, 2] = float("nan")
    for dim in (0, 1):
        diag = s.diagonal().unsqueeze(dim)
        above, tied = _counts(s, dim)
        assert torch.equal(above, (s > diag).sum(dim)) and torch.equal(tied, (s == diag).sum(dim) - 1)
    assert _counts(s, 1)[1].sum() > 0


# --- the evaluator on a hand-built task -----------------------------------------------------------------
def _task(xa, xb, pair=("audio", "text"), labels=None, class_texts=None, metrics=("recall",)):
    from bench.features.bank import SplitFeatures
    from bench.scenario import Task
    from bench.streams import Step
    split = SplitFeatures(features={pair[0]: xa, pair[1]: xb}, ids=[str(i) for i in range(len(xa))],
                          labels=labels, class_texts=class_texts)
    return Task(Step(0, "s", pair, tuple(metrics)), split, split)


def _identity_heads(d=3, mods=("audio", "text")):
    from bench.heads import Heads
    return Heads({m: d for m in mods}, d)


def test_evaluator_reports_both_directions_and_their_mean():
    from bench.evaluate import Evaluator
    xa = torch.tensor([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]])
    xb = torch.tensor([[2., 3., 3.], [0., 1., 0.], [0., 0., 1.]])        # identity heads: scores = xa @ xb.T
    s = xa @ xb.T
    row = Evaluator([_task(xa, xb)], seed=0).evaluate(_identity_heads(), learned=0)
    ab, ba = recall_at(s).tolist(), recall_at(s.T).tolist()
    assert ab != ba                                                    # the two directions differ here
    assert row["r1_ab"][0] == pytest.approx(100 * ab[0]) and row["r1_ba"][0] == pytest.approx(100 * ba[0])
    assert row["r1"][0] == pytest.approx(50 * (ab[0] + ba[0]))


def test_zero_shot_accuracy_queries_the_non_text_side():
    from bench.evaluate import Evaluator
    texts = torch.eye(3)
    labels = torch.tensor([0, 1, 2, 0])
    audio = texts[labels]                                    # each clip is its class text: always right
    text = texts[(labels + 1) % 3]                           # the caption side points at the next class
    task = _task(audio, text, labels=labels, class_texts=texts, metrics=("acc",))
    row = Evaluator([task], seed=0).evaluate(_identity_heads(), learned=0)
    assert row["acc"][0] == pytest.approx(100.0)


def test_alignment_deviation_is_relative_to_the_scores_right_after_the_task_was_learned():
    from bench.evaluate import Evaluator
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    ev, heads = Evaluator([_task(xa, xb)], seed=0), _identity_heads()
    assert ev.evaluate(heads, learned=0)["align_dev"] == [None]       # before the task: no reference
    assert ev.evaluate(heads, learned=1)["align_dev"] == [0.0]        # the reference itself
    ref = xa @ xb.T
    with torch.no_grad():
        heads["audio"].weight.mul_(1.5)
    moved = ev.evaluate(heads, learned=2)["align_dev"][0]
    assert moved == pytest.approx(((1.5 * ref - ref).norm() / ref.norm()).item(), rel=1e-5)


def test_recall_both_reads_columns_as_the_second_direction():
    za = torch.tensor([[1., 0.], [.9, .1], [0., 1.], [.1, .9], [-1., 0.], [-.9, -.1]])
    zb = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.], [-1., 0.], [-1., 0.]])
    s = za @ zb.T
    ab, ba = recall_both(s, ks=(1, 2))
    assert torch.equal(ab, recall_at(s, ks=(1, 2))) and torch.equal(ba, recall_at(s.T.contiguous(), ks=(1, 2)))
    ab, ba = recall_both(torch.tensor([[1., 2.], [0., 3.]]), ks=(1,))
    assert ab.tolist() == [0.5] and ba.tolist() == [1.0]     # row 0 loses to a candidate; no column does


class _NoReuse(Evaluator):
    def _changed(self, heads):
        return set(heads.modalities)


def test_an_evaluation_reuses_exactly_the_tasks_whose_heads_did_not_change():
    """Cells of tasks whose heads are unchanged are reused; any change — by an optimiser step or written
    through ``.data`` (which no version counter sees) — is noticed: every row equals full recomputation."""
    sc = get_scenario(streams.load("toy"))
    heads = Heads(sc.in_dims, sc.head_dim)
    reuse, full = Evaluator(sc.tasks, 0), _NoReuse(sc.tasks, 0)
    computed = []
    task_cells = reuse._task_cells
    reuse._task_cells = lambda h, j: (computed.append(j), task_cells(h, j))[1]
    pairs = [t.pair for t in sc.tasks]                     # toy: text-video, text-audio, audio-vision
    assert reuse.evaluate(heads, 0) == full.evaluate(heads, 0) and computed == [0, 1, 2]
    edits = [
        (1, lambda: heads["vision"].weight.data.mul_(0.5)),              # .data: touches task 2 only
        (2, lambda: heads["video"].bias.data.add_(0.1)),                 # task 0 only
        (3, lambda: None),                                               # nothing changed
    ]
    for learned, edit in edits:
        computed.clear()
        edit()
        assert reuse.evaluate(heads, learned) == full.evaluate(heads, learned)
        touched = [j for j, p in enumerate(pairs) if {"vision"} & set(p)] if learned == 1 else \
            [j for j, p in enumerate(pairs) if {"video"} & set(p)] if learned == 2 else []
        assert computed == touched
    opt = torch.optim.SGD(heads["text"].parameters(), lr=0.1)
    heads["text"].weight.grad = torch.ones_like(heads["text"].weight)
    opt.step()
    computed.clear()
    assert reuse.evaluate(heads, 3) == full.evaluate(heads, 3) and computed == [0, 1]
