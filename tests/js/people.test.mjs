// The People panel's pure parts: who is listed with which role, and how a change reads.
import test from "node:test";
import assert from "node:assert/strict";
import { describeChange, linkState, peopleRows } from "../../static/js/view_people.js";

test("members first by role then name, watching marked, staff watching listed last", () => {
  const rows = peopleRows({ zed: "viewer", alice: "owner", bob: "controller", amy: "viewer" }, ["bob", "root", "zed"]);
  assert.deepEqual(rows, [
    { user: "alice", role: "owner", watching: false },
    { user: "bob", role: "controller", watching: true },
    { user: "amy", role: "viewer", watching: false },
    { user: "zed", role: "viewer", watching: true },
    { user: "root", role: "staff", watching: true },
  ]);
  assert.deepEqual(peopleRows({}, []), []);
});

test("each kind of change reads as a sentence, from the reader's side", () => {
  const c = (user, role, previous, by, link = null) => ({ user, role, previous, by, link, at: "t" });
  assert.equal(describeChange(c("bob", "viewer", null, "alice")), "alice added bob as viewer");
  assert.equal(describeChange(c("bob", "controller", "viewer", "alice"), "bob"), "alice made you controller (was viewer)");
  assert.equal(describeChange(c("bob", null, "controller", "alice"), "alice"), "You removed bob");
  assert.equal(describeChange(c("carol", "viewer", null, "carol", "7")), "carol joined through a link as viewer");
  assert.equal(describeChange(c("bob", "viewer", null, null)), "The system added bob as viewer");
});

test("a link's state says why it is of no use, or until when and how often it was used", () => {
  assert.equal(linkState({ role: "viewer", unusable: "revoked", uses: 2, max_uses: null }), "revoked · 2 used");
  assert.equal(
    linkState({ role: "controller", unusable: null, uses: 1, max_uses: 3, expires_at: "2026-11-24T10:00:00.000Z" }),
    "controller · until 2026-11-24 10:00 · 1/3 used",
  );
});
