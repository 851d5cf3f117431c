import { describe, expect, it } from "vitest";
import { grantedActions, parseScope, patternMatches } from "../../../src/auth/scopes";

describe("repository patterns", () => {
  it.each([
    ["team/app", "team/app", true],
    ["team/app", "team/app2", false],
    ["team/app", "team", false],
    ["team/*", "team/app", true],
    ["team/*", "team/app/sub", false],
    ["team/*", "team", false],
    ["team/*", "other/app", false],
    ["team/**", "team/app", true],
    ["team/**", "team/app/sub/deeper", true],
    ["team/**", "team", false],
    ["team/**", "teams/app", false],
    ["*", "alpine", true],
    ["*", "library/alpine", false],
    ["**", "library/alpine", true],
    ["team/app-*", "team/app-web", true],
    ["team/app-*", "team/api", false],
    ["*/app", "team/app", true],
    ["*/app", "team/sub/app", false],
    ["**/app", "team/sub/app", true],
    ["a.b", "axb", false],
  ])("%s matches %s: %s", (pattern, name, expected) => {
    expect(patternMatches(pattern, name)).toBe(expected);
  });
});

describe("grants", () => {
  it("unions actions of every matching scope; push brings delete; admin brings all", () => {
    const scopes = [parseScope("repository:team/*:pull"), parseScope("repository:team/app:push"), parseScope("runner")];
    expect([...grantedActions(scopes, "team/app")].sort()).toEqual(["delete", "pull", "push"]);
    expect([...grantedActions(scopes, "team/web")]).toEqual(["pull"]);
    expect([...grantedActions(scopes, "other")]).toEqual([]);
    expect([...grantedActions([parseScope("admin")], "anything/at/all")].sort()).toEqual(["delete", "pull", "push"]);
  });

  it("normalizes action order and duplicates", () => {
    expect(parseScope("repository:x:push,pull,push")).toEqual({ kind: "repository", pattern: "x", actions: ["pull", "push"] });
  });
});
