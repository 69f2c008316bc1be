"""template.yaml's tables and bucket: what SAM translates them to, and that the store code and
the test tables use the very same names, keys and indexes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform

from control.store.dynamodb import BY_DAY, BY_EDGE, BY_EDGE_EXPIRY, TableNames
from tests.store.aws_servers import TEMPLATE, TableSpec, load_template, template_tables

CFN_LINT = Path(sys.executable).parent / "cfn-lint"


class _NoManagedPolicies:
    """The managed-policy loader SAM asks only when a function names an AWS managed policy."""

    def load(self) -> dict[str, str]:
        return {}


def sam_translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation SAM makes of `template`: local CodeUris become s3:// URIs first
    (what `sam package` does), the rest is SAM's own translation."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in properties:
            properties["CodeUri"] = "s3://sdpbx-artifacts/control.zip"
    translated: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return translated


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # SAM builds ARNs for a partition
        env.setenv("AWS_REGION", "eu-west-1")
        return sam_translate(load_template())


def _table(translated: dict[str, Any], logical_id: str) -> dict[str, Any]:
    resource = translated["Resources"][logical_id]
    assert resource["Type"] == "AWS::DynamoDB::Table"
    properties: dict[str, Any] = resource["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    return properties


def _keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(key["AttributeName"], key["KeyType"]) for key in schema]


def _gsi(properties: dict[str, Any], name: str) -> dict[str, Any]:
    (index,) = [i for i in properties.get("GlobalSecondaryIndexes", []) if i["IndexName"] == name]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    return dict(index)


def test_the_loader_understands_short_form_intrinsics() -> None:
    template = load_template()
    assert template["Resources"]["CallsTable"]["Properties"]["TableName"] == {
        "Fn::Sub": "${TablePrefix}-calls"}
    assert template["Outputs"]["ControlApiFunctionArn"]["Value"] == {
        "Fn::GetAtt": ["ControlApiFunction", "Arn"]}
    assert template["Outputs"]["CallsTableName"]["Value"] == {"Ref": "CallsTable"}


def test_sam_translation_keeps_the_tables_and_their_indexes(translated: dict[str, Any]) -> None:
    calls = _table(translated, "CallsTable")
    assert calls["TableName"] == {"Fn::Sub": "${TablePrefix}-calls"}
    assert _keys(calls["KeySchema"]) == [("call_id", "HASH")]
    assert _keys(_gsi(calls, BY_EDGE)["KeySchema"]) == [("edge_id", "HASH"), ("active", "RANGE")]
    assert calls["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}

    registrations = _table(translated, "RegistrationsTable")
    assert _keys(registrations["KeySchema"]) == [("aor", "HASH"), ("contact", "RANGE")]
    assert _keys(_gsi(registrations, BY_EDGE_EXPIRY)["KeySchema"]) == [
        ("edge_id", "HASH"), ("expires_at", "RANGE")]
    assert registrations["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}

    directory = _table(translated, "DirectoryTable")
    assert _keys(directory["KeySchema"]) == [("pk", "HASH"), ("sk", "RANGE")]
    assert "GlobalSecondaryIndexes" not in directory
    assert translated["Resources"]["DirectoryTable"]["DeletionPolicy"] == "Retain"

    cdrs = _table(translated, "CdrsTable")
    assert _keys(cdrs["KeySchema"]) == [("call_id", "HASH")]
    assert _keys(_gsi(cdrs, BY_DAY)["KeySchema"]) == [("day", "HASH"), ("start_time", "RANGE")]
    assert "TimeToLiveSpecification" not in cdrs  # the CDR index is kept
    assert translated["Resources"]["CdrsTable"]["DeletionPolicy"] == "Retain"

    edges = _table(translated, "EdgesTable")
    assert _keys(edges["KeySchema"]) == [("edge_id", "HASH")]
    assert edges["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}


def test_sam_translation_keeps_the_private_bucket(translated: dict[str, Any]) -> None:
    bucket = translated["Resources"]["BlobBucket"]
    assert bucket["Type"] == "AWS::S3::Bucket"
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    properties = bucket["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True,
        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    rules = {rule["Id"]: rule for rule in properties["LifecycleConfiguration"]["Rules"]}
    assert rules["abort-incomplete-multipart-uploads"]["Status"] == "Enabled"
    assert rules["expire-recordings"]["Status"] == {"Ref": "RecordingExpiration"}
    assert translated["Parameters"]["RecordingExpiration"]["Default"] == "Disabled"


def test_outputs_name_every_table_and_the_bucket(translated: dict[str, Any]) -> None:
    outputs = translated["Outputs"]
    for logical_id in ("CallsTable", "RegistrationsTable", "DirectoryTable", "CdrsTable",
                       "EdgesTable", "BlobBucket"):
        assert outputs[f"{logical_id}Name"]["Value"] == {"Ref": logical_id}


def test_translated_cloudformation_lints_clean(
    translated: dict[str, Any], tmp_path: Path
) -> None:
    """Lint SAM's output as plain CloudFormation: this holds even with a cfn-lint that no
    longer expands the SAM transform itself (>= 1.54)."""
    assert "Transform" not in translated

    def lint(template: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / name
        path.write_text(json.dumps(template))
        return subprocess.run([str(CFN_LINT), "--", str(path)], capture_output=True,
                              text=True, timeout=120, check=False)

    result = lint(translated, "translated.json")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = copy.deepcopy(translated)  # and the lint can fail: a dangling Ref
    broken["Outputs"]["CallsTableName"]["Value"] = {"Ref": "NoSuchTable"}
    planted = lint(broken, "broken.json")
    assert planted.returncode != 0 and "NoSuchTable" in planted.stdout


# --- the test tables are the template's tables ------------------------------------------------


def _spec(specs: list[TableSpec], resource: str) -> TableSpec:
    (spec,) = [s for s in specs if s.resource == resource]
    return spec


def test_template_tables_are_the_ones_the_code_uses() -> None:
    specs = template_tables("unit")
    names = TableNames.for_prefix("unit")
    assert sorted(s.create["TableName"] for s in specs) == sorted(
        [names.calls, names.registrations, names.directory, names.cdrs, names.edges])
    for spec in specs:
        create = spec.create
        assert create["BillingMode"] == "PAY_PER_REQUEST"
        # DynamoDB wants exactly the key attributes defined, no more and no less.
        defined = {a["AttributeName"] for a in create["AttributeDefinitions"]}
        used = {k["AttributeName"] for k in create["KeySchema"]}
        for index in create.get("GlobalSecondaryIndexes", []):
            used |= {k["AttributeName"] for k in index["KeySchema"]}
            assert set(index) <= {"IndexName", "KeySchema", "Projection"}
        assert defined == used, spec.resource


def test_template_tables_carry_ttl_and_gsis() -> None:
    specs = template_tables("unit")
    assert _spec(specs, "CallsTable").ttl_attribute == "ttl"
    assert _spec(specs, "RegistrationsTable").ttl_attribute == "ttl"
    assert _spec(specs, "EdgesTable").ttl_attribute == "ttl"
    assert _spec(specs, "CdrsTable").ttl_attribute is None
    assert _spec(specs, "DirectoryTable").ttl_attribute is None
    assert "PointInTimeRecoverySpecification" in _spec(specs, "DirectoryTable").ignored
    gsis = {
        s.resource: [i["IndexName"] for i in s.create.get("GlobalSecondaryIndexes", [])]
        for s in specs
    }
    assert gsis == {"CallsTable": [BY_EDGE], "RegistrationsTable": [BY_EDGE_EXPIRY],
                    "DirectoryTable": [], "CdrsTable": [BY_DAY], "EdgesTable": []}
    attribute_types = {
        a["AttributeName"]: a["AttributeType"]
        for a in _spec(specs, "CdrsTable").create["AttributeDefinitions"]
    }
    assert attribute_types == {"call_id": "S", "day": "S", "start_time": "N"}


def test_a_table_property_without_a_test_mapping_fails_loudly(tmp_path: Path) -> None:
    text = TEMPLATE.read_text().replace(
        "      TableName: !Sub \"${TablePrefix}-edges\"\n",
        "      TableName: !Sub \"${TablePrefix}-edges\"\n      KinesisStreamSpecification: {}\n",
    )
    assert "KinesisStreamSpecification" in text
    path = tmp_path / "template.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="KinesisStreamSpecification"):
        template_tables("unit", path)


def test_an_unresolvable_table_name_fails_loudly(tmp_path: Path) -> None:
    text = TEMPLATE.read_text().replace('"${TablePrefix}-edges"', '"${AWS::StackName}-edges"')
    path = tmp_path / "template.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="StackName"):
        template_tables("unit", path)
