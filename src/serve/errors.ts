/**
 * Errors in OpenAI's shape, `{error: {message, type, param, code}}`, with the HTTP status each
 * deserves; fastify's own errors (bad JSON, a body over the limit, a schema violation) mapped to it.
 */
import type { FastifyError } from 'fastify';

export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  get body(): { error: { message: string; type: ErrorType; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** The top-level field a schema violation is in (a missing one included), as OpenAI's `param`. */
function paramOf(error: NonNullable<FastifyError['validation']>[number]): string | null {
  const top = error.instancePath.split('/')[1];
  if (top) return top;
  return error.keyword === 'required' ? String((error.params as { missingProperty: string }).missingProperty) : null;
}

/** An error fastify raised before the handler ran (or one a handler threw) as an ApiError. */
export function apiErrorOf(error: FastifyError | ApiError | Error): ApiError {
  if (error instanceof ApiError) return error;
  const e = error as FastifyError;
  if (e.validation && e.validation.length > 0) {
    const first = e.validation[0];
    const param = paramOf(first);
    const where = first.instancePath ? first.instancePath.slice(1).replaceAll('/', '.') : param ?? 'body';
    const missing = first.keyword === 'required' ? (first.params as { missingProperty: string }).missingProperty : null;
    const message = missing !== null ? `missing required parameter '${first.instancePath ? `${where}.` : ''}${missing}'` : `'${where}' ${first.message}`;
    return new ApiError(400, message, 'invalid_request_error', param, first.keyword === 'required' ? 'missing_required_parameter' : 'invalid_value');
  }
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError(400, `the body is not valid JSON: ${e.message}`, 'invalid_request_error', null, 'invalid_json');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, e.message, 'invalid_request_error', null, 'body_too_large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, `${e.message}: send Content-Type: application/json`, 'invalid_request_error', null, 'unsupported_media_type');
  }
  if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) return new ApiError(e.statusCode, e.message);
  return new ApiError(500, 'internal server error', 'server_error');
}
