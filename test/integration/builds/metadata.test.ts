import { describe, expect, it } from "vitest";
import { build, imageOf } from "./helpers";

describe("metadata steps", () => {
  it("produce docker's config and history", async () => {
    const b = await build(
      {
        Dockerfile: [
          "FROM scratch",
          "ARG VERSION=1.0",
          "ENV APP_HOME=/srv/app PORT=8080",
          "ENV GREETING=\"hello ${VERSION}\"",
          "LABEL org.opencontainers.image.version=$VERSION maintainer=kiln",
          "EXPOSE $PORT 53/udp",
          "VOLUME /data",
          "USER 1000:1000",
          "STOPSIGNAL SIGTERM",
          "ENTRYPOINT [\"/app\"]",
          "CMD [\"--serve\"]",
          "SHELL [\"/bin/bash\", \"-c\"]",
          "ONBUILD RUN echo child",
          "",
        ].join("\n"),
      },
      "?tag=meta/app:v1",
    );
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.steps.map((s) => s.status)).toEqual(Array(13).fill("done"));
    const { config } = await imageOf("meta/app", "v1");
    expect(config.architecture).toBe("amd64");
    expect(config.os).toBe("linux");
    expect(config.created).toBe("1970-01-01T00:00:00Z");
    expect(config.config.Env).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_HOME=/srv/app", "PORT=8080", "GREETING=hello 1.0"]);
    expect(config.config.Labels).toEqual({ "org.opencontainers.image.version": "1.0", maintainer: "kiln" });
    expect(config.config.ExposedPorts).toEqual({ "8080/tcp": {}, "53/udp": {} });
    expect(config.config.Volumes).toEqual({ "/data": {} });
    expect(config.config.User).toBe("1000:1000");
    expect(config.config.StopSignal).toBe("SIGTERM");
    expect(config.config.Entrypoint).toEqual(["/app"]);
    expect(config.config.Cmd).toEqual(["--serve"]);
    expect(config.config.Shell).toEqual(["/bin/bash", "-c"]);
    expect(config.config.OnBuild).toEqual(["RUN echo child"]);
    expect(config.rootfs).toEqual({ type: "layers", diff_ids: [] });
    expect(config.history.map((h: { created_by: string }) => h.created_by)).toEqual([
      "ARG VERSION=1.0",
      "ENV APP_HOME=/srv/app PORT=8080",
      "ENV GREETING=hello 1.0",
      "LABEL org.opencontainers.image.version=1.0 maintainer=kiln",
      "EXPOSE map[53/udp:{} 8080/tcp:{}]",
      "VOLUME [/data]",
      "USER 1000:1000",
      "STOPSIGNAL SIGTERM",
      'ENTRYPOINT ["/app"]',
      'CMD ["--serve"]',
      "SHELL [/bin/bash -c]",
    ]);
    expect(config.config.ArgsEscaped).toBe(true);
    expect(config.history.every((h: { empty_layer?: boolean }) => h.empty_layer === true)).toBe(true);
  });

  it("rebuild is fully cached with the same digest; --build-arg changes the key", async () => {
    const files = { Dockerfile: "FROM scratch\nARG V=1\nENV V=$V\nCMD echo $V\n" };
    const a = await build(files, "?tag=meta/cache:a");
    const b = await build(files, "?tag=meta/cache:b");
    expect(a.status).toBe("succeeded");
    expect(b.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached"]);
    expect(b.image!.digest).toBe(a.image!.digest);
    const c = await build(files, "?tag=meta/cache:c&build-arg=V=2");
    expect(c.steps.map((s) => s.status)).toEqual(["cached", "done", "done", "done"]);
    const { config } = await imageOf("meta/cache", "c");
    expect(config.config.Env).toContain("V=2");
    expect(config.config.Cmd).toEqual(["/bin/sh", "-c", "echo $V"]);
    const d = await build(files, "?tag=meta/cache:d&no-cache=1");
    expect(d.steps.map((s) => s.status)).toEqual(["done", "done", "done", "done"]);
    expect(d.image!.digest).toBe(a.image!.digest);
  });

  it("FROM <stage> inherits the stage's layers and config; ARGs are per stage; --target builds only what it needs", async () => {
    const files = {
      Dockerfile: [
        "ARG BASE_VERSION=3",
        "FROM scratch AS base",
        "ARG BASE_VERSION",
        "ENV BASE_VERSION=$BASE_VERSION",
        "COPY f /f",
        "FROM base AS app",
        "ARG BASE_VERSION",
        "LABEL v=$BASE_VERSION",
        "USER 5",
        "FROM scratch AS unrelated",
        "COPY g /g",
        "",
      ].join("\n"),
      f: "f",
      g: "g",
    };
    const b = await build(files, "?tag=meta/stage:1&target=app");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.steps.map((s) => s.instruction)).toEqual(["FROM scratch AS base", "ARG BASE_VERSION", "ENV BASE_VERSION=$BASE_VERSION", "COPY f /f", "FROM base AS app", "ARG BASE_VERSION", "LABEL v=$BASE_VERSION", "USER 5"]);
    const { config, manifest } = await imageOf("meta/stage", "1");
    expect(manifest.layers).toHaveLength(1);
    expect(config.config.Env).toContain("BASE_VERSION=3");
    expect(config.config.Labels).toEqual({ v: "3" });
    expect(config.config.User).toBe("5");
    expect(config.history.map((h: { created_by: string }) => h.created_by)).toEqual(["ARG BASE_VERSION=3", "ENV BASE_VERSION=3", "COPY f /f # buildkit", "ARG BASE_VERSION=3", "LABEL v=3", "USER 5"]);
  });
});
