import { db } from "../db";

export interface Order { id: string; userId: string; totalCents: number }

export class OrderStore {
  async findById(id: string): Promise<Order | null> {
    return (await db.query("select * from orders where id = $1", [id])).rows[0] ?? null;
  }
  async save(order: Order): Promise<void> {
    await db.query("insert into orders values ($1, $2, $3) on conflict (id) do update set total_cents = $3",
      [order.id, order.userId, order.totalCents]);
  }
  async delete(id: string): Promise<void> {
    await db.query("delete from orders where id = $1", [id]);
  }
}
