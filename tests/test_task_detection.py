"""--task auto: which task a data file gets."""

from workbench.core.tasks import detect_task


def test_named_class_column_beats_a_numeric_side_column(tmp_path):
    # The demo corpus's shape: a categorical "sentiment" next to a numeric "confidence".
    p = tmp_path / "tweets.csv"
    rows = [f"{'positive' if i % 3 == 0 else 'negative' if i % 3 == 1 else 'neutral'},{0.3 + (i % 70) / 100:.4f},tweet number {i} here"
            for i in range(200)]
    p.write_text("sentiment,confidence,text\n" + "\n".join(rows) + "\n")
    assert detect_task(p).name == "text-classification"


def test_numeric_score_column_is_regression(tmp_path):
    p = tmp_path / "scores.tsv"
    p.write_text("text\tscore\n" + "".join(f"sentence {i} words\t{(i * 37 % 100) / 20:.2f}\n" for i in range(200)))
    assert detect_task(p).name == "text-regression"


def test_plain_text_label_tsv_is_classification(tmp_path):
    p = tmp_path / "plain.tsv"
    p.write_text("text\tlabel\n" + "".join(f"sentence {i}\t{i % 2}\n" for i in range(100)))
    assert detect_task(p).name == "text-classification"
