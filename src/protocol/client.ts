/** The kiln CLI's User-Agent on POST /v1/builds: the build's trigger is recorded as `cli`, anything else as `api`. */
export const CLI_USER_AGENT = "kiln-cli";

export function isCliUserAgent(ua: string | null | undefined): boolean {
  return !!ua && (ua === CLI_USER_AGENT || ua.startsWith(`${CLI_USER_AGENT}/`));
}
