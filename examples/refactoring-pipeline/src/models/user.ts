import { db } from "../db";

export interface User { id: string; email: string; createdAt: Date }

export class UserStore {
  async findById(id: string): Promise<User | null> {
    return (await db.query("select * from users where id = $1", [id])).rows[0] ?? null;
  }
  async save(user: User): Promise<void> {
    await db.query("insert into users values ($1, $2, $3) on conflict (id) do update set email = $2",
      [user.id, user.email, user.createdAt]);
  }
  async delete(id: string): Promise<void> {
    await db.query("delete from users where id = $1", [id]);
  }
}
