import { describe, expect, it } from "vitest";
import { isPathComponent, isRepositoryName, isTag } from "./names";

describe("repository names", () => {
  it("accepts the distribution grammar", () => {
    for (const ok of ["a", "kiln/app", "a.b_c__d---e/f0", "x/y/z", "a".repeat(255)]) expect(isRepositoryName(ok), ok).toBe(true);
  });
  it("refuses uppercase, empty components, bad separators and names over 255 characters", () => {
    for (const bad of ["", "A", "a//b", "/a", "a/", "a___b", "-a", "a-", "a..b", "a:b", "a".repeat(256)]) expect(isRepositoryName(bad), bad).toBe(false);
  });
  it("path components have no slash", () => {
    expect(isPathComponent("acme")).toBe(true);
    expect(isPathComponent("acme/app")).toBe(false);
  });
});

describe("tags", () => {
  it("accepts up to 128 characters not starting with . or -", () => {
    for (const ok of ["latest", "v1.2.3-rc_1", "_x", "A".repeat(128)]) expect(isTag(ok), ok).toBe(true);
    for (const bad of ["", ".x", "-x", "a/b", "a:b", "A".repeat(129)]) expect(isTag(bad), bad).toBe(false);
  });
});
