import { UserStore } from "../models/user";
import { parseBody } from "./parse";

const users = new UserStore();

export async function getUser(req: any): Promise<any> {
  const user = await users.findById(req.params.id);
  return user ? { status: 200, body: user } : { status: 404, body: { error: "not_found" } };
}

export async function updateEmail(req: any): Promise<any> {
  const body = parseBody(req) as any;
  const user = await users.findById(req.params.id);
  if (!user) return { status: 404, body: { error: "not_found" } };
  await users.save({ ...user, email: body.email });
  return { status: 204, body: null };
}
