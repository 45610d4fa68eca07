"""Every setting a user can set is documented once and shown where they look for it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from restrl.configs import field_docs, undocumented
from restrl_flows.cli import app
from restrl_flows.params import FLOW_PARAMS, PRESETS, preset


@pytest.mark.parametrize("flow", sorted(FLOW_PARAMS))
def test_every_flow_parameter_has_help_text(flow):
    assert undocumented(FLOW_PARAMS[flow]) == []


def test_run_help_lists_every_pipeline_field_with_its_help():
    result = CliRunner().invoke(app, ["run", "pipeline", "--help"], terminal_width=400)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for doc in field_docs(FLOW_PARAMS["pipeline"]):
        assert doc.path in text
        assert " ".join(doc.help.split())[:40] in text


@pytest.mark.parametrize("flow", sorted(FLOW_PARAMS))
@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip_through_the_form_json(flow, name):
    """What the Prefect form and --params-file carry is what the flow receives."""
    params = preset(FLOW_PARAMS[flow], name)
    assert type(params).model_validate(params.model_dump(mode="json")) == params


def test_a_misspelt_setting_is_refused():
    from pydantic import ValidationError

    values = FLOW_PARAMS["pipeline"]().model_dump(mode="json")
    values["stage1"]["sampling"]["temprature"] = 0.5
    with pytest.raises(ValidationError, match="temprature"):
        FLOW_PARAMS["pipeline"].model_validate(values)


def test_a_misspelt_set_fails_with_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["run", "pipeline", "--set", "stage1.samplng.n=4"])
    assert result.exit_code == 2
    assert "samplng" in result.output
