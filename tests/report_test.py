import matplotlib.figure

from keras_distill.app import report


def test_plot_run_draws_each_terms_loss_weight_and_learned_temperature(
    tmp_path, monkeypatch
):
    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, path, **kwargs):
        for ax in fig.axes:
            drawn[ax.get_title()] = [line.get_label() for line in ax.get_lines()]
            if ax.get_title() == "Scheduled weights":
                drawn["top"] = ax.get_ylim()[1]
        return save(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    history = {
        "loss": [1.0, 0.5],
        "val_loss": [1.1, 0.6],
        "distillation_loss": [0.4, 0.3],
        "kd_loss": [0.3, 0.2],
        "ctkd_loss": [0.1, 0.05],
        "val_kd_loss": [0.3, 0.2],
        "alpha": [0.1, 0.1],
        "kd_weight": [1.0, 1.0],
        "ctkd_weight": [2.0, 3.0],
        "ctkd_reversal": [0.0, 1.0],
        "temperature": [4.0, 4.0],
        "ctkd_temperature": [15.6, 14.0],
    }
    report.plot_run(history, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert drawn["Temperature"] == ["temperature", "ctkd_temperature"]
    assert drawn["Losses (log scale)"] == [
        "loss",
        "val_loss",
        "distillation_loss",
        "kd_loss",
        "ctkd_loss",
    ]
    assert drawn["Scheduled weights"] == [
        "alpha (weight of the labels)",
        "kd_weight",
        "ctkd_weight",
        "ctkd_reversal",
    ]
    assert drawn["top"] >= 3.0  # a weight above 1 stays in view
