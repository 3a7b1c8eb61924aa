export { requestId } from "./requestId";
// export { rateLimiter } from "./rateLimiter";   <- the writer adds this
