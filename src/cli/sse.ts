// The CLI reads build events with the shared parser of the event stream's frame format.
export { readSse, type SseEvent } from "../protocol/events";
